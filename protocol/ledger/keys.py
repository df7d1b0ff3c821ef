"""Every ledger state key, in one table.

Rule: no other ledger module builds a key by hand; they call the functions below. The storage layer
stores the state namespace opaquely, so keys are short bytes with an ASCII prefix and big-endian
integers (so a range scan walks time or height in order). Ids are 32 raw bytes; asset ids are ASCII.

| prefix | key                                   | value (canonical msgpack)                          |
|--------|---------------------------------------|----------------------------------------------------|
| `m/`   | `m/params`, `m/height`, `m/time`, `m/ev` | params, last height, last block time ms, [height, next event index] |
| `m/`   | `m/results`                           | [results root of the block before, of the last block] (protocol/results.py) |
| `p/`   | `p/<id>`                              | participant: name, roles, kyc, frozen, key         |
| `k/`   | `k/<signing key>`                     | participant id the key signs for (b"" = revoked)   |
| `n/`   | `n/<signing key>`                     | next nonce of that key (int)                       |
| `as/`  | `as/<asset>`                          | asset: issuer, decimals, issued, redeemed, kind    |
| `b/`   | `b/<id><asset>`                       | balance (int > 0; absent = 0)                      |
| `r/`   | `r/<receivable id>`                   | receivable record                                  |
| `co/`  | `co/<collateral id>`                  | collateral record                                  |
| `lo/`  | `lo/<loan id>`                        | loan record                                        |
| `l/`   | `l/<borrower id><lender id>`          | credit limit: asset, limit, used                   |
| `x/`   | `x/<borrower id><lender id>`          | open principal of that lender's active/overdue loans to the borrower, {asset: int > 0} |
| `cp/`  | `cp/<campaign id>`                    | campaign record                                    |
| `cc/`  | `cc/<campaign id><investor id>`       | escrowed contribution (int)                        |
| `fx/`  | `fx/<quote id>`                       | FX quote record                                    |
| `c/`   | `c/<id>`                              | credit history counters and score                  |
| `q/`   | `q/<be64 time><u8 type><id>`          | b"" (schedule of time-driven transitions)          |
| `ev/`  | `ev/<be64 height><be32 index>`        | event map                                          |
| `ea/`  | `ea/<id><be64 height><be32 index>`    | b"" (per-account event index)                      |
| `ek/`  | `ek/<kind>\\x00<be64 height><be32 index>` | b"" (per-kind event index)                     |
| `tx/`  | `tx/<tx hash>`                        | [height, first event index, event count] of ok txs |
"""

from __future__ import annotations

import struct

_BE64 = struct.Struct(">Q")
_BE32 = struct.Struct(">I")


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix` (exclusive range end).

    Never `prefix + b"\\xff"`: ids are raw bytes and may themselves start with 0xff."""
    p = prefix.rstrip(b"\xff")
    if not p:
        raise ValueError("a prefix of only 0xff bytes has no end")
    return p[:-1] + bytes([p[-1] + 1])


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    return prefix, prefix_end(prefix)


PARAMS = b"m/params"
HEIGHT = b"m/height"
TIME = b"m/time"
EVENT_CURSOR = b"m/ev"
RESULTS = b"m/results"

P_PARTICIPANT = b"p/"
P_KEY = b"k/"
P_NONCE = b"n/"
P_ASSET = b"as/"
P_BALANCE = b"b/"
P_RECEIVABLE = b"r/"
P_COLLATERAL = b"co/"
P_LOAN = b"lo/"
P_LIMIT = b"l/"
P_EXPOSURE = b"x/"
P_CAMPAIGN = b"cp/"
P_CONTRIB = b"cc/"
P_FX = b"fx/"
P_CREDIT = b"c/"
P_SCHED = b"q/"
P_EVENT = b"ev/"
P_EV_ACCOUNT = b"ea/"
P_EV_KIND = b"ek/"
P_TX = b"tx/"

# Derived audit indexes (the event log, its account and kind indexes, tx positions): written by the
# ledger, read only by queries, never by tx execution. The node stores them beside state but outside
# the Merkle state root (like Ethereum's logs), so they cost no tree updates; they are not part of state
# snapshots, so a state-synced node has the event history from its snapshot height on.
INDEX_PREFIXES = (P_EVENT, P_EV_ACCOUNT, P_EV_KIND, P_TX)

# schedule entry types (one byte after the time)
S_LOAN_DUE_SOON = 1
S_LOAN_DUE = 2
S_LOAN_DEFAULT = 3
S_RECV_DUE_SOON = 4
S_RECV_DUE = 5
S_CAMPAIGN_DEADLINE = 6
S_FX_EXPIRY = 7


def be64(n: int) -> bytes:
    return _BE64.pack(n)


def be32(n: int) -> bytes:
    return _BE32.pack(n)


def unbe64(b: bytes) -> int:
    return int(_BE64.unpack(b)[0])


def unbe32(b: bytes) -> int:
    return int(_BE32.unpack(b)[0])


def participant(pid: bytes) -> bytes:
    return P_PARTICIPANT + pid


def key_owner(key: bytes) -> bytes:
    return P_KEY + key


def nonce(key: bytes) -> bytes:
    return P_NONCE + key


def asset(asset_id: str) -> bytes:
    return P_ASSET + asset_id.encode("ascii")


def balance(account: bytes, asset_id: str) -> bytes:
    return P_BALANCE + account + asset_id.encode("ascii")


def balances_of(account: bytes) -> tuple[bytes, bytes]:
    """Range of every balance key of one account."""
    return prefix_range(P_BALANCE + account)


def receivable(rid: bytes) -> bytes:
    return P_RECEIVABLE + rid


def collateral(cid: bytes) -> bytes:
    return P_COLLATERAL + cid


def loan(lid: bytes) -> bytes:
    return P_LOAN + lid


def limit(borrower: bytes, lender: bytes) -> bytes:
    return P_LIMIT + borrower + lender


def exposure(borrower: bytes, lender: bytes) -> bytes:
    return P_EXPOSURE + borrower + lender


def limits_of(borrower: bytes) -> tuple[bytes, bytes]:
    return prefix_range(P_LIMIT + borrower)


def campaign(cid: bytes) -> bytes:
    return P_CAMPAIGN + cid


def contribution(cid: bytes, investor: bytes) -> bytes:
    return P_CONTRIB + cid + investor


def contributions_of(cid: bytes) -> tuple[bytes, bytes]:
    return prefix_range(P_CONTRIB + cid)


def fx_quote(qid: bytes) -> bytes:
    return P_FX + qid


def credit(pid: bytes) -> bytes:
    return P_CREDIT + pid


def sched(time_ms: int, typ: int, obj: bytes) -> bytes:
    return P_SCHED + be64(time_ms) + bytes([typ]) + obj


def sched_until(time_ms: int) -> tuple[bytes, bytes]:
    """Range of schedule entries due at or before `time_ms`."""
    return P_SCHED, P_SCHED + be64(time_ms + 1)


def parse_sched(key: bytes) -> tuple[int, int, bytes]:
    body = key[len(P_SCHED):]
    return unbe64(body[:8]), body[8], body[9:]


def event_pos(height: int, index: int) -> bytes:
    """An event's position, the common suffix of its key and of its index entries (ordered by time)."""
    return be64(height) + be32(index)


def event(height: int, index: int) -> bytes:
    return P_EVENT + event_pos(height, index)


def ev_account(account: bytes, height: int, index: int) -> bytes:
    return P_EV_ACCOUNT + account + event_pos(height, index)


def ev_kind_prefix(kind: str) -> bytes:
    return P_EV_KIND + kind.encode("ascii") + b"\x00"


def ev_kind(kind: str, height: int, index: int) -> bytes:
    return ev_kind_prefix(kind) + event_pos(height, index)


def event_keys(kind: str, accounts: list[bytes], height: int, index: int) -> tuple[bytes, list[bytes]]:
    """The key of one event and of its index entries (one per account, one for its kind), sharing the
    position suffix computed once."""
    pos = event_pos(height, index)
    return P_EVENT + pos, [P_EV_ACCOUNT + a + pos for a in accounts] + [ev_kind_prefix(kind) + pos]


def tx_record(tx_hash: bytes) -> bytes:
    return P_TX + tx_hash
