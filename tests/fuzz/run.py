"""`make fuzz`: long randomized runs of every decoder that faces untrusted bytes.

Each target takes arbitrary bytes (and mutations of valid encodings) and must either return a typed
value or raise the layer's typed error: a crash of any other kind is a finding. Runs are bounded by
example count (FUZZ_EXAMPLES, default 20000 per target) and print a summary line per target.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.block import GENESIS_PARENT, Block
from protocol.crypto import PrivateKey, sha256
from protocol.errors import ProtocolError
from protocol.framing import FrameReader
from protocol.tx import SignedTx

KEY = PrivateKey(b"\x07" * 32)
SAMPLE_TX = SignedTx.create(KEY, {"chain": "fuzz", "kind": "transfer", "nonce": 3, "to": b"\x01" * 32,
                                  "asset": "CNY.BANKA", "amount": 10})
SAMPLE_BLOCK = Block.build(chain="fuzz", height=2, parent=GENESIS_PARENT, proposer=KEY.public_key, view=0,
                           time=1, state_root=sha256(b""), results_root=sha256(b"r"), txs=[SAMPLE_TX.raw])


def _decode_codec(data: bytes) -> None:
    codec.decode(data)


def _decode_tx(data: bytes) -> None:
    SignedTx.from_wire(data)


def _decode_block(data: bytes) -> None:
    Block.decode(data)


def _feed_frames(data: bytes) -> None:
    FrameReader(max_frame=1024).feed(data)


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    def mutate(ops: list[tuple[int, int]]) -> bytes:
        buf = bytearray(seed)
        for pos, val in ops:
            if buf:
                buf[pos % len(buf)] = val
        return bytes(buf)

    flips = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4).map(mutate)
    cuts = st.integers(0, len(seed)).map(lambda n: seed[:n])
    return flips | cuts | st.binary(max_size=512)


TARGETS: list[tuple[str, Callable[[bytes], None], bytes]] = [
    ("codec.decode", _decode_codec, codec.encode({"a": [1, b"x", "y"], "b": {"c": None}})),
    ("SignedTx.from_wire", _decode_tx, SAMPLE_TX.raw),
    ("Block.decode", _decode_block, SAMPLE_BLOCK.encode()),
    ("FrameReader.feed", _feed_frames, (5).to_bytes(4, "big") + b"hello"),
]


def run_target(name: str, fn: Callable[[bytes], None], seed: bytes, examples: int) -> int:
    findings: list[str] = []

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_mutations(seed))
    def check(data: bytes) -> None:
        try:
            fn(data)
        except ProtocolError:
            pass
        except Exception as exc:  # a finding: report it, keep fuzzing
            findings.append(f"{type(exc).__name__}: {exc} on input {data.hex()[:200]}")

    start = time.monotonic()
    check()
    print(f"fuzz {name}: {examples} inputs in {time.monotonic() - start:.1f}s, findings={len(findings)}")
    for f in findings[:5]:
        print(f"  {f}")
    return len(findings)


def main() -> int:
    examples = int(os.environ.get("FUZZ_EXAMPLES", "20000"))
    total = sum(run_target(n, f, s, examples) for n, f, s in TARGETS)
    print(f"fuzz total findings: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
