"""The chaos verdict: read every block from every node, replay the chain, check every accepted tx.

After the run has healed, `verify` asks each node over its HTTP API only (DESIGN section 5/6; nothing of
`node/` is imported, so a bug in the node cannot hide itself from the check):

1. convergence: all nodes at one height with one state root and one head hash (`GET /status`);
2. every block 1..head from every node (`GET /blocks/{h}?format=msgpack`): a height a node cannot serve
   is a history hole; a height where nodes hold different blocks is a divergence, and so is a block whose
   commit certificate does not carry a quorum of the genesis validators' signatures;
3. the agreed chain replayed from genesis with the ledger's own `apply_block` on a fresh in-memory state:
   each header's state root must match the replayed root after `protocol.block.state_root_height` of its
   height (block h carries the root after h-2: pipelining, docs/consensus.md), and so must its results
   root (the receipts and events of block h-2), the final root must equal every node's
   root, and money must be conserved (`protocol.ledger.audit.supply_problems`);
4. every node's API agrees with the replay (each asset's supply, every account's balances), so the
   invariants hold on what the nodes serve, not only on the replay;
5. every accepted tx: in the agreed chain (else it is lost) and found committed, at that height, by
   `GET /txs/{hash}` on every node (else its tx index has a hole there).

Rule: bounded: at most `CONCURRENCY` requests in flight, every request with a timeout and a few retries;
the verdict is data (`Verdict`), the caller decides the exit status.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from protocol import codec
from protocol.block import Block, state_root_height
from protocol.consensus import CommitCertificate
from protocol.errors import ProtocolError
from protocol.ledger import BlockResult, apply_block, apply_genesis
from protocol.ledger import keys as lkeys
from protocol.ledger.audit import supply_problems
from protocol.merkle import MemoryNodeStore, MerkleTree
from protocol.results import GENESIS_RESULTS
from protocol.state import MemoryState, Overlay
from protocol.tx import SignedTx

CONCURRENCY = 16
REQUEST_TIMEOUT_S = 10.0
RETRIES = 4
MAX_DETAIL = 20  # examples kept per kind of problem


@dataclass
class Verdict:
    height: int = 0
    converged: bool = False
    statuses: dict[str, Any] = field(default_factory=dict)
    divergences: int = 0
    history_holes: int = 0
    holes_by_node: dict[str, dict[str, int]] = field(default_factory=dict)
    in_chain: dict[str, int] = field(default_factory=dict)  # accepted tx hash -> height
    committed_everywhere: set[str] = field(default_factory=set)
    failed_receipts: int = 0
    invariants_ok: bool = False
    problems: list[str] = field(default_factory=list)  # human-readable, bounded per kind

    def note(self, kind: str, text: str) -> None:
        if sum(1 for p in self.problems if p.startswith(kind + ":")) < MAX_DETAIL:
            self.problems.append(f"{kind}: {text}")


class Api:
    """Bounded, retrying GETs against the nodes (JSON or raw bytes)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.gate = asyncio.Semaphore(CONCURRENCY)

    async def get(self, url: str, *, raw: bool = False) -> tuple[int, Any]:
        """(status, document or bytes); status 0 when the node could not be reached after the retries."""
        for attempt in range(RETRIES):
            try:
                async with self.gate, self.session.get(url) as r:
                    body = await r.read()
                    if r.status >= 500 and attempt + 1 < RETRIES:
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    if raw or r.status == 404:
                        return r.status, body
                    return r.status, await r.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                await asyncio.sleep(0.2 * (attempt + 1))
        return 0, None


async def _converge(api: Api, urls: dict[str, str], timeout_s: float, v: Verdict) -> None:
    deadline = time.monotonic() + timeout_s
    last: tuple[Any, ...] | None = None
    while True:
        docs = await asyncio.gather(*(api.get(u + "/status") for u in urls.values()))
        v.statuses = {n: (d if s == 200 else None) for n, (s, d) in zip(urls, docs, strict=True)}
        seen = {(d["height"], d["state_root"], d["last_block_hash"]) for d in v.statuses.values() if d}
        if len(seen) == 1 and all(v.statuses.values()):
            if seen == last:  # the same twice in a row: the chain stopped growing
                v.converged, v.height = True, next(iter(seen))[0]
                return
            last = seen
        else:
            last = None
        if time.monotonic() > deadline:
            v.height = max((d["height"] for d in v.statuses.values() if d), default=0)
            v.note("divergence", "nodes did not converge: " + ", ".join(
                f"{n}={(d or {}).get('height')}/{str((d or {}).get('state_root'))[:12]}"
                for n, d in sorted(v.statuses.items())))
            return
        await asyncio.sleep(1.0)


async def _blocks(api: Api, url: str, height: int) -> list[bytes | None]:
    async def one(h: int) -> bytes | None:
        status, body = await api.get(f"{url}/blocks/{h}?format=msgpack", raw=True)
        if status != 200:
            return None
        doc = codec.decode(body)
        return codec.encode(doc)  # block and certificate together: equal only if both are equal
    return list(await asyncio.gather(*(one(h) for h in range(1, height + 1))))


def _split(entry: bytes) -> tuple[Block, CommitCertificate]:
    doc = codec.decode(entry)
    return Block.decode(doc["block"]), CommitCertificate.from_value(codec.decode(doc["certificate"]))


def _reference_chain(by_node: dict[str, list[bytes | None]], height: int, genesis: dict[str, Any],
                     v: Verdict) -> list[Block | None]:
    """The block every node agrees on at each height (None where none can be trusted); counts holes,
    divergences and certificates without a quorum."""
    validators = [bytes.fromhex(x["public_key"]) for x in genesis["validators"]]
    chain: list[Block | None] = []
    for name, entries in by_node.items():
        missing = sum(1 for e in entries if e is None)
        if missing:
            v.holes_by_node.setdefault(name, {})["blocks"] = missing
            v.history_holes += missing
            first = next(h for h, e in enumerate(entries, 1) if e is None)
            v.note("history_hole", f"{name} cannot serve {missing} of {height} blocks (first missing: {first})")
    for h in range(1, height + 1):
        decoded: list[tuple[Block, CommitCertificate]] = []
        for name, entries in by_node.items():
            if entries[h - 1] is None:
                continue
            try:
                decoded.append(_split(entries[h - 1]))  # type: ignore[arg-type]
            except (ProtocolError, KeyError, TypeError) as exc:
                v.divergences += 1
                v.note("divergence", f"height {h}: {name} serves an undecodable block or certificate ({exc})")
        votes = Counter(b.hash for b, _c in decoded)
        if not votes:
            chain.append(None)
            continue
        if len(votes) > 1:  # certificates may differ (any quorum of signers); blocks may not
            v.divergences += 1
            v.note("divergence", f"height {h}: {len(votes)} different blocks across nodes")
        agreed = votes.most_common(1)[0][0]
        block, cert = next((b, c) for b, c in decoded if b.hash == agreed)
        if cert.height != h or cert.block_hash != block.hash or not cert.verify(validators, genesis["chain_id"]):
            v.divergences += 1
            v.note("divergence", f"height {h}: the commit certificate is not a quorum for this block")
        chain.append(block)
    return chain


class Replay:
    """A fresh in-memory ledger from a genesis spec, blocks applied as a node applies them (`apply_block` on
    an overlay), and the Merkle state root a node would compute (derived indexes left out)."""

    def __init__(self, ledger_spec: dict[str, Any]) -> None:
        self.state = MemoryState()
        self._nodes = MemoryNodeStore()
        self._tree = MerkleTree(self._nodes)
        ov = Overlay(self.state)
        apply_genesis(ov, ledger_spec)
        self.root = self._commit(ov)

    def _commit(self, ov: Overlay) -> bytes:
        changes = ov.changes()
        self.state.apply(changes)
        update = self._tree.update({k: x for k, x in changes.items() if not k.startswith(lkeys.INDEX_PREFIXES)})
        self._nodes.apply_update(update)
        return update.root

    def apply(self, block: Block, txs: list[SignedTx]) -> BlockResult:
        ov = Overlay(self.state)
        result = apply_block(ov, block.header, txs)
        self.root = self._commit(ov)
        return result


def _replay(chain: list[Block | None], genesis: dict[str, Any], v: Verdict) -> tuple[MemoryState, bytes | None]:
    """Apply genesis and the agreed blocks; returns the state and its root (None if the chain has a gap)."""
    replay = Replay(genesis["ledger"])
    roots, results = [replay.root], [GENESIS_RESULTS]
    for h, block in enumerate(chain, 1):
        if block is None:
            v.note("replay", f"stopped at height {h}: no node serves a trusted block there")
            return replay.state, None
        after = state_root_height(h)
        if block.header.state_root != roots[after]:
            v.note("invariant", f"height {h}: header state root differs from the replayed root after {after}")
            v.invariants_ok = False
        if block.header.results_root != results[after]:
            v.note("invariant", f"height {h}: header results root differs from the replayed results of {after}")
            v.invariants_ok = False
        txs = [SignedTx.from_wire(t) for t in block.txs]
        result = replay.apply(block, txs)
        results.append(result.results_root)
        for tx, receipt in zip(txs, result.receipts, strict=True):
            v.in_chain[tx.hash.hex()] = h
            if not receipt.ok:
                v.failed_receipts += 1
        roots.append(replay.root)
    return replay.state, roots[-1]


async def _api_agrees(api: Api, urls: dict[str, str], state: MemoryState, v: Verdict) -> None:
    """Every node serves the replayed supplies and balances."""
    balances: dict[str, dict[str, int]] = {}
    for k, raw in state.iter_range(*lkeys.prefix_range(lkeys.P_BALANCE)):
        acct = k[len(lkeys.P_BALANCE):len(lkeys.P_BALANCE) + 32].hex()
        balances.setdefault(acct, {})[k[len(lkeys.P_BALANCE) + 32:].decode()] = int(codec.decode(raw))
    assets = [k[len(lkeys.P_ASSET):].decode() for k, _ in state.iter_range(*lkeys.prefix_range(lkeys.P_ASSET))]
    for name, url in urls.items():
        docs = await asyncio.gather(*(api.get(f"{url}/accounts/{a}") for a in balances))
        for acct, (status, doc) in zip(balances, docs, strict=True):
            if status != 200 or doc.get("balances") != balances[acct]:
                v.invariants_ok = False
                v.note("invariant", f"{name}: account {acct[:12]} balances {(doc or {}).get('balances')} "
                                    f"differ from the replay {balances[acct]}")
        for asset in assets:
            status, doc = await api.get(f"{url}/assets/{asset}")
            held = sum(b.get(asset, 0) for b in balances.values())
            if status != 200 or doc.get("supply") != held:
                v.invariants_ok = False
                v.note("invariant", f"{name}: {asset} supply {(doc or {}).get('supply')} but {held} held "
                                    "in the replayed balances")


async def _tx_index(api: Api, urls: dict[str, str], accepted: list[str], v: Verdict) -> None:
    todo = [h for h in accepted if h in v.in_chain]
    everywhere = set(todo)
    for name, url in urls.items():
        docs = await asyncio.gather(*(api.get(f"{url}/txs/{h}") for h in todo))
        holes = 0
        for h, (status, doc) in zip(todo, docs, strict=True):
            if status != 200 or doc.get("status") not in ("committed", "failed") or doc.get("height") != v.in_chain[h]:
                holes += 1
                everywhere.discard(h)
        if holes:
            v.holes_by_node.setdefault(name, {})["txs"] = holes
            v.history_holes += holes
            v.note("history_hole", f"{name}: GET /txs/{{hash}} does not find {holes} of {len(todo)} committed txs")
    v.committed_everywhere = everywhere


async def verify_async(urls: dict[str, str], genesis: dict[str, Any], accepted: list[str], *,
                       converge_timeout_s: float = 90.0) -> Verdict:
    v = Verdict(invariants_ok=True)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        api = Api(session)
        await _converge(api, urls, converge_timeout_s, v)
        if not v.converged:
            v.divergences += 1
        by_node = {n: await _blocks(api, u, v.height) for n, u in urls.items()}
        chain = _reference_chain(by_node, v.height, genesis, v)
        state, root = _replay(chain, genesis, v)
        if root is None:
            v.invariants_ok = False
        else:
            for name, st in v.statuses.items():
                if st is not None and st["height"] == v.height and st["state_root"] != root.hex():
                    v.invariants_ok = False
                    v.note("invariant", f"{name}: state root {st['state_root'][:16]} but the replay gives "
                                        f"{root.hex()[:16]} at height {v.height}")
        problems = supply_problems(state)
        for p in problems:
            v.note("invariant", p)
        if problems:
            v.invariants_ok = False
        await _api_agrees(api, urls, state, v)
        await _tx_index(api, urls, accepted, v)
    return v


def verify(urls: dict[str, str], genesis: dict[str, Any], accepted: list[str], *,
           converge_timeout_s: float = 90.0) -> Verdict:
    return asyncio.run(verify_async(urls, genesis, accepted, converge_timeout_s=converge_timeout_s))
