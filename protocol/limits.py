"""Every size limit of smeledger in one place: a few chosen numbers, and everything else derived from them.

Chosen (protocol ceilings, the same for every chain; a chain's consensus params may set less):
    TX_MAX_BYTES        one signed tx envelope on the wire
    BLOCK_MAX_TXS       txs in one block
    BLOCK_MAX_TX_BYTES  the sum of a block's raw tx bytes
    VALIDATORS_MAX      size of a validator set

Derived for one chain by `SizeLimits.derive(max_block_txs, max_block_bytes, validators)`, as upper bounds of
the canonical encodings (every count below is the most bytes msgpack can spend on that part):
    block_bytes          an encoded block: each tx behind a bin header, plus the header
    certificate_bytes    a commit/prepared certificate with a signature from every validator
    message_bytes        the largest consensus message: a NEW-VIEW (n VIEW-CHANGEs without blocks, each with
                         two certificates, plus one block) or a VIEW-CHANGE carrying its prepared block
    wal_record_bytes     the largest consensus WAL record: such a message plus a prepared certificate
    frame_bytes          a P2P frame holding the largest message in its envelope, sealed
    wal_bytes            the whole WAL: the records one height can leave, many times over
    api_body_min_bytes   the smallest API body limit that still takes one largest tx as JSON hex
So a block a proposer may build always fits a WAL record and a frame, with its certificate; a test builds
one at the limit and one byte over. Rule: no other module states a size that one of these implies.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * 1024

TX_MAX_BYTES = 64 * KIB
BLOCK_MAX_TXS = 20_000
BLOCK_MAX_TX_BYTES = 8 * MIB
VALIDATORS_MAX = 1024

BIN_HEADER = 5  # msgpack bin 32: the largest header in front of a byte string
HEADER_BYTES = 512  # a block header: chain id (<= 64), 5 hashes/keys of 32 bytes, 3 ints, keys
SIG_ENTRY_BYTES = 72  # [index, signature] in a certificate: array, int <= 3 bytes, bin header, 64 bytes
CERT_FIXED_BYTES = 160  # a certificate's height, view, hash and keys
MESSAGE_FIXED_BYTES = 512  # a consensus message's own fields (type, chain, view, height, hash, from, sig)
ENVELOPE_BYTES = 64  # the P2P envelope {"t": type, "b": body}
SEAL_BYTES = 64  # channel counter + MAC, rounded up
WAL_RECORDS_PER_HEIGHT = 48  # far more than one height leaves behind after compaction (see consensus/wal.py)
WAL_MIN_BYTES = 256 * MIB

# Ceilings for decoding untrusted bytes before a chain's own limits are known.
BLOCK_CEILING_BYTES = BLOCK_MAX_TX_BYTES + BLOCK_MAX_TXS * BIN_HEADER + HEADER_BYTES + 64


def certificate_bytes(validators: int) -> int:
    return CERT_FIXED_BYTES + SIG_ENTRY_BYTES * validators


def block_bytes(max_block_txs: int, max_block_tx_bytes: int) -> int:
    return max_block_tx_bytes + max_block_txs * BIN_HEADER + HEADER_BYTES + 64


@dataclass(frozen=True, slots=True)
class SizeLimits:
    max_block_txs: int
    max_block_tx_bytes: int
    validators: int
    block_bytes: int
    certificate_bytes: int
    message_bytes: int
    wal_record_bytes: int
    frame_bytes: int
    wal_bytes: int
    tx_max_bytes: int = TX_MAX_BYTES
    api_body_min_bytes: int = 2 * TX_MAX_BYTES + 4 * KIB

    @classmethod
    def derive(cls, max_block_txs: int, max_block_tx_bytes: int, validators: int) -> SizeLimits:
        if not 1 <= max_block_txs <= BLOCK_MAX_TXS:
            raise ValueError(f"max_block_txs must be 1..{BLOCK_MAX_TXS}")
        if not TX_MAX_BYTES <= max_block_tx_bytes <= BLOCK_MAX_TX_BYTES:
            raise ValueError(f"max_block_bytes must be {TX_MAX_BYTES}..{BLOCK_MAX_TX_BYTES} (one largest tx fits)")
        if not 1 <= validators <= VALIDATORS_MAX:
            raise ValueError(f"a validator set holds 1..{VALIDATORS_MAX} keys")
        block = block_bytes(max_block_txs, max_block_tx_bytes)
        cert = certificate_bytes(validators)
        view_change = MESSAGE_FIXED_BYTES + 2 * cert  # its commit certificate and prepared certificate
        new_view = MESSAGE_FIXED_BYTES + validators * (view_change + BIN_HEADER) + BIN_HEADER + block
        message = max(new_view, view_change + BIN_HEADER + block)
        record = message + cert + MESSAGE_FIXED_BYTES
        frame = message + ENVELOPE_BYTES + SEAL_BYTES
        return cls(max_block_txs=max_block_txs, max_block_tx_bytes=max_block_tx_bytes, validators=validators,
                   block_bytes=block, certificate_bytes=cert, message_bytes=message, wal_record_bytes=record,
                   frame_bytes=frame, wal_bytes=max(WAL_MIN_BYTES, WAL_RECORDS_PER_HEIGHT * record))
