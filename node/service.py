"""`Node`: builds one node's component tree from its config and runs it in one asyncio TaskGroup.

The tree (docs/architecture.md draws it): the `ChainStore` (database, state, blocks, WAL; one writer
thread) at the root; the `Mempool` and `Acceptance` (the accepted-tx journal on its own thread, the API's
intake; replayed and re-admitted before intake opens); `P2P` and `TxGossip` on it; `SyncService` and the `ConsensusDriver`,
joined by the `ConsensusInbox` (sync hands verified blocks to the driver through it); the `ApiServer` on
top, reading through `NodeStatus`. Each component gets what it needs, typed, in its constructor, and
exposes one `async run()`; every `run()` is a task of the node's one TaskGroup.

Fail-stop (DESIGN section 7): when any component's task ends with an error, the TaskGroup cancels the
others; the node logs ONE line `node_failed` naming the component and the cause, waits for in-flight
storage work, closes the database and raises, so `smeledger run` exits non-zero and systemd restarts it
(the WAL restores consensus). Ordered shutdown on SIGTERM/SIGINT or `request_stop()`: intake closes (the
API answers 503), consensus and sync stop, then gossip and P2P, the API drains, the mempool stops, the journal
writes what is queued and closes, and only after every started write and read has finished is the database
closed; within `SHUTDOWN_BUDGET_S`. When the ordered stop has not ended `ORDERLY_STOP_S` after it began, the
node logs `node_stop_timeout` naming the components still running and cancels every one of them (again:
a component waiting for its own work, such as a journal write in flight, stops waiting), so no later
component is left running. The process that owns the node (`run(exit_deadline=True)`, the CLI) also ends
at `SHUTDOWN_BUDGET_S` after the stop request whatever still runs (a thread stuck in a write would
otherwise hold the exit forever): `node_stop_abandoned`, exit status `STOP_ABANDONED_EXIT`. That is safe
because nothing is acknowledged before it is durable (the crash-point tests kill the node at every write).

Rule: this module owns lifetimes only; it holds no protocol logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics

from node import failpoints, fdbudget, memory
from node import genesis as genesis_mod
from node.acceptance import Acceptance, JournalLimits
from node.api.keys import ApiDeps
from node.api.server import ApiServer
from node.byzantine import check_allowed, outbox_for
from node.chain import ChainStatus, ChainStore, TimeOffset
from node.config import Config
from node.consensus import ConsensusDriver, ConsensusInbox
from node.errors import ConfigError, NodeError
from node.genesis import Genesis
from node.journal import JournalFile
from node.keyfile import check_admin_token, load_node_key
from node.logging import Position, Throttle, install_loop_handler, node_logger
from node.mempool import Mempool, MempoolLimits
from node.p2p import P2P, P2PSettings, PeerAddr, TxGossip
from node.status import Health, NodeCollector, NodeStatus
from node.sync import SyncEnv, SyncService, SyncSettings
from protocol.consensus.params import ConsensusParams
from protocol.crypto import PrivateKey
from protocol.errors import ProtocolError
from protocol.ledger import admission_error, apply_genesis, next_nonce
from protocol.ledger import keys as ledger_keys
from protocol.ledger.results import genesis_index_entries
from protocol.limits import SizeLimits
from protocol.state import Overlay
from protocol.tx import SignedTx
from storage.blocks import BlockStore
from storage.db import Database
from storage.errors import StorageError
from storage.meta import ChainMeta
from storage.state import StateStore
from storage.wal import ConsensusWal

SHUTDOWN_BUDGET_S = 5.0  # from the stop request to the end of the process
ORDERLY_STOP_S = SHUTDOWN_BUDGET_S - 1.0  # the ordered stop; then whatever still runs is cancelled again
STOP_ORDER = (("consensus", "sync"), ("gossip", "p2p"), ("api",), ("mempool",), ("journal",))
STOP_ABANDONED_EXIT = 1
P2P_STOP_TIMEOUT_S = 1.5


@contextlib.asynccontextmanager
async def _listening(what: str, host: str, port: int) -> AsyncIterator[None]:
    """Turn a failed bind into a NodeError that names the address and the config setting."""
    try:
        yield
    except OSError as exc:
        raise NodeError(f"cannot listen on {host}:{port} for {what} ({exc.strerror or exc}); is another "
                        f"process using it? change {what}.port in config.toml", code="bind_failed") from None


def chain_limits(cfg: Config, gen: Genesis) -> tuple[ConsensusParams, SizeLimits, int]:
    """The chain's consensus params, the size limits they imply (protocol/limits.py) and the P2P frame size:
    derived, or the configured one when it is at least that large."""
    try:
        params = gen.consensus_params(cfg.consensus.as_dict())
        limits = SizeLimits.derive(params.max_block_txs, params.max_block_bytes, len(gen.validators))
    except ValueError as exc:
        raise ConfigError(f"config error: consensus limits: {exc}") from None
    frame = cfg.p2p.max_frame or limits.frame_bytes
    if frame < limits.frame_bytes:
        raise ConfigError(f"config error: p2p.max_frame is {frame} bytes, but this chain's largest consensus "
                          f"message needs {limits.frame_bytes}; raise it or leave it 0 (derived)")
    if cfg.api.max_body_bytes < limits.api_body_min_bytes:
        raise ConfigError(f"config error: api.max_body_bytes must be at least {limits.api_body_min_bytes} "
                          "(one largest tx as JSON hex)")
    return params, limits, frame


@dataclass
class Components:
    """The node's component tree, built in dependency order (each one's constructor names its needs)."""

    genesis: Genesis
    key: PrivateKey
    log: Any
    registry: CollectorRegistry
    store: ChainStore
    mempool: Mempool
    acceptance: Acceptance
    p2p: P2P
    gossip: TxGossip
    sync: SyncService
    consensus: ConsensusDriver
    api: ApiServer
    status: NodeStatus
    health: Health
    chain: ChainStatus
    time_offset: TimeOffset


class Node:
    def __init__(self, config: Config, *, log_stream: Any = None, byzantine: str | None = None) -> None:
        self.config = config
        self.byzantine = byzantine  # test-only misbehaviour (node/byzantine.py); refused off testnets
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._log_stream = log_stream
        self.parts: Components | None = None
        self.log: Any = None
        self.failure: BaseException | None = None  # the first component failure (already logged)
        self.timings: dict[str, float] = {}

    @property
    def api(self) -> ApiServer | None:
        return self.parts.api if self.parts is not None else None

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def run(self, *, install_signals: bool = False, exit_deadline: bool = False) -> None:
        """Build, start every component, serve until `request_stop()` (or a signal) or a component fails,
        then shut down in order. Raises the first failure after logging it as `node_failed`.
        `exit_deadline`: the caller owns the process, which ends `SHUTDOWN_BUDGET_S` after a stop request
        at the latest (see the module docstring); never set it in a process that outlives the node."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        deadline = loop.create_task(self._arm_exit_deadline(), name="exit-deadline") if exit_deadline else None
        t0 = time.monotonic()
        try:
            parts = await self._build()
            self.parts = parts
            try:
                await self._serve(parts, t0)
            finally:
                await parts.store.close()
                parts.log.info("node_stopped")
        except BaseException as exc:
            real = _first_error(exc)
            if real is None:
                return  # an orderly stop cancelled what was left
            if self.failure is None:
                self._log_failure("startup", real)
            raise real from None
        finally:
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            if deadline is not None:
                deadline.cancel()  # a no-op once a stop request armed the thread
            self.stopped.set()

    def _log_failure(self, component: str, exc: BaseException) -> None:
        self.failure = exc
        if self.log is None:
            return
        known = isinstance(exc, NodeError | ProtocolError | StorageError)
        self.log.error("node_failed", component=component, error=str(exc) or type(exc).__name__,
                       code=getattr(exc, "code", "internal"), exc_type=type(exc).__name__,
                       exc_info=None if known else exc)

    # ---- running -----------------------------------------------------------------------------------

    async def _serve(self, parts: Components, t0: float) -> None:
        log = parts.log
        p = self.config.p2p
        async with _listening("p2p", p.host, p.port):
            await parts.p2p.start()
        async with _listening("api", self.config.api.host, self.config.api.port):
            await parts.api.start()
        try:
            await parts.acceptance.restore()  # before consensus and intake: journaled txs are work again
        except BaseException:
            parts.acceptance.close_now()
            raise
        async with asyncio.TaskGroup() as tg:
            order = [("journal", parts.acceptance.run()), ("mempool", parts.mempool.run()), ("p2p", parts.p2p.run()),
                     ("gossip", parts.gossip.run()), ("sync", parts.sync.run()), ("consensus", parts.consensus.run()),
                     ("api", parts.api.run())]
            tasks = {name: tg.create_task(self._supervise(name, coro), name=name) for name, coro in order}
            parts.health.accepting = True
            self.timings["startup_s"] = time.monotonic() - t0
            log.info("node_started", startup_ms=int(self.timings["startup_s"] * 1000), api=parts.api.url,
                     p2p_port=parts.p2p.listen_port, failpoints=failpoints.armed() or None)
            self.ready.set()
            stop = tg.create_task(self._stop_requested.wait())
            await asyncio.wait([stop, *tasks.values()], return_when=asyncio.FIRST_COMPLETED)
            if self.failure is not None:
                return  # the TaskGroup cancels the rest and raises the failure
            stop.cancel()
            t1 = time.monotonic()
            await self._shutdown(parts, tasks)
            self.timings["shutdown_s"] = time.monotonic() - t1

    async def _supervise(self, name: str, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self.failure is None:
                self._log_failure(name, _first_error(exc) or exc)
            self._stop_requested.set()
            raise

    async def _shutdown(self, parts: Components, tasks: dict[str, asyncio.Task[None]]) -> None:
        parts.health.accepting = False
        parts.log.info("node_stopping")
        try:
            async with asyncio.timeout(ORDERLY_STOP_S):
                for group in STOP_ORDER:
                    for name in group:
                        tasks[name].cancel()
                    await asyncio.wait([tasks[name] for name in group])
        except TimeoutError:
            # every component still running is cancelled, the groups not reached yet included: left
            # running, they would hold the TaskGroup (and the process) open for good
            running = [name for name, task in tasks.items() if not task.done()]
            parts.log.warning("node_stop_timeout", budget_s=SHUTDOWN_BUDGET_S, orderly_s=ORDERLY_STOP_S,
                              running=running)
            for name in running:
                tasks[name].cancel()

    async def _arm_exit_deadline(self) -> None:
        """After a stop request, a thread ends the process at `SHUTDOWN_BUDGET_S` if it is still alive then
        (a thread, not a task: the loop may be the thing that waits)."""
        await self._stop_requested.wait()
        log = self.log

        def expire() -> None:
            time.sleep(SHUTDOWN_BUDGET_S)
            waiting = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
            if log is not None:
                log.error("node_stop_abandoned", budget_s=SHUTDOWN_BUDGET_S, threads=waiting,
                          note="work still running was abandoned; nothing acknowledged is lost")
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os._exit(STOP_ABANDONED_EXIT)

        threading.Thread(target=expire, name="exit-deadline", daemon=True).start()

    # ---- building the tree ---------------------------------------------------------------------------

    async def _build(self) -> Components:
        cfg = self.config
        gen = genesis_mod.load(cfg.node.genesis_file)
        if gen.chain_id != cfg.node.chain_id:
            raise ConfigError(f"config error: node.chain_id is {cfg.node.chain_id!r} but the genesis file "
                              f"{cfg.node.genesis_file} is for chain {gen.chain_id!r}")
        if self.byzantine is not None:
            check_allowed(self.byzantine, gen.chain_id)
        params, limits, frame = chain_limits(cfg, gen)
        key = load_node_key(cfg.node.key_file)
        check_admin_token(cfg.token_path)
        position = Position()
        log = node_logger(cfg.node.name, position, cfg.logging.level, self._log_stream)
        self.log = log
        install_loop_handler(asyncio.get_running_loop(), log, Throttle())
        is_validator = key.public_key in gen.validator_keys
        log.info("node_starting", node_id=key.public_key.hex(), chain_id=gen.chain_id,
                 role="validator" if is_validator else "observer", home=str(cfg.home))
        if failpoints.armed():
            log.warning("failpoints_armed", points=failpoints.armed())

        p = cfg.p2p
        budget = fdbudget.plan(fdbudget.raise_soft_limit(), api_wanted=cfg.api.max_connections,
                               p2p=fdbudget.p2p_descriptors(len(gen.validator_keys) + len(p.observers), len(p.peers),
                                                            p.max_pending_handshakes))
        log.info("descriptor_budget", **budget.as_log(), large_buffers_returned=memory.return_large_buffers())
        store = await asyncio.to_thread(self._open_store, gen, limits, log, budget.db_files)
        try:
            parts = self._wire(cfg, gen, key, log, position, store, params, frame, budget.api_connections)
        except BaseException:
            store.close_now()
            raise
        try:
            await parts.acceptance.open()
        except BaseException:
            parts.acceptance.close_now()
            store.close_now()
            raise
        return parts

    def _open_store(self, gen: Genesis, limits: SizeLimits, log: Any, db_files: int) -> ChainStore:
        mem = self.config.memory
        db = Database.open(self.config.node.data_dir, max_open_files=db_files, cache_mb=mem.db_cache_mb,
                           write_buffer_mb=mem.db_write_buffer_mb)
        try:
            ChainMeta(db).bind(gen.chain_id, gen.hash)
            state = StateStore(db, index_prefixes=ledger_keys.INDEX_PREFIXES,
                               bucket_cache_bytes=mem.state_cache_mb * 1024 * 1024)
            blocks = BlockStore(db, state)
            wal = ConsensusWal(db, max_bytes=limits.wal_bytes, max_record_bytes=limits.wal_record_bytes)
            if wal.cut:
                log.warning("wal_tail_cut", records=len(wal.cut), first_seq=wal.cut[0], last_seq=wal.cut[-1],
                            reason="damaged or truncated tail (a write cut short); never acted on")
            if blocks.last_block_hash() is None:
                overlay = Overlay(state.reader(snapshot=False))
                apply_genesis(overlay, gen.ledger)
                staged = state.stage(overlay.changes())
                blocks.commit_genesis(staged, gen.hash)
                log.info("genesis_applied", genesis_hash=gen.hash.hex(), state_root=staged.new_root.hex())
            store = ChainStore(db, state, blocks, wal)
        except BaseException:
            db.close()
            raise
        log.info("storage_opened", height=store.head.height, state_root=store.head.state_root.hex())
        return store

    def _wire(self, cfg: Config, gen: Genesis, key: PrivateKey, log: Any, position: Position, store: ChainStore,
              params: ConsensusParams, frame: int, api_connections: int) -> Components:
        disable_created_metrics()  # one name per metric: no `<counter>_created` series beside each counter
        registry = CollectorRegistry()
        chain = ChainStatus(history_from=store.blocks.history_from())
        time_offset = TimeOffset(allowed=cfg.testnet.allow_time_offset)
        health = Health(stall_after_s=cfg.health.stall_after_s)
        position.update(height=store.head.height)

        live = store.state.reader(snapshot=False)

        def sender_check(tx: SignedTx) -> tuple[str, str] | None:
            err = admission_error(live, tx)
            return None if err is None else (err.code, err.message)

        m = cfg.mempool
        mempool = Mempool(gen.chain_id, lambda k: next_nonce(live, k), sender_check=sender_check,
                          limits=MempoolLimits(max_txs=m.max_txs, max_bytes=m.max_bytes,
                                               per_sender_max=m.per_sender_max, nonce_window=m.nonce_window,
                                               max_batch=cfg.api.max_batch_txs,
                                               recent_committed=cfg.memory.recent_committed,
                                               verified_cache=cfg.memory.verified_sigs, ttl_s=float(m.ttl_s)))
        registry.register(mempool.collector())
        j = cfg.journal
        acceptance = Acceptance(mempool, JournalFile(cfg.node.data_dir / "journal"),
                                JournalLimits(max_txs=j.max_txs or m.max_txs, max_bytes=j.max_bytes or m.max_bytes,
                                              dropped_keep=j.dropped_keep, dropped_keep_ms=j.dropped_keep_s * 1000),
                                tx_committed=lambda h: (store.blocks.get_tx_location(h) is not None
                                                        or live.get(ledger_keys.tx_record(h)) is not None),
                                log=log.bind(component="journal"), registry=registry)

        p = cfg.p2p
        settings = P2PSettings(listen_host=p.host, listen_port=p.port, max_frame=frame,
                               gossip_known_per_peer=cfg.memory.gossip_known_per_peer,
                               send_queue_frames=p.send_queue_frames, send_queue_bytes=p.send_queue_bytes,
                               max_pending_handshakes=p.max_pending_handshakes,
                               max_pending_handshakes_per_address=p.max_pending_handshakes_per_address)
        p2p = P2P(key, gen.chain_id, validators=gen.validator_keys, observers=p.observers,
                  dial=[PeerAddr(x.public_key, x.host, x.port, x.name) for x in p.peers],
                  names={v.public_key: v.name for v in gen.validators}, settings=settings,
                  log=log.bind(component="p2p"), stop_timeout=P2P_STOP_TIMEOUT_S)
        registry.register(p2p.collector())
        gossip = TxGossip(p2p, mempool, settings, log=log.bind(component="gossip"), primary=lambda: chain.primary)

        inbox = ConsensusInbox()
        sc = cfg.sync
        sync_settings = SyncSettings(block_sync_max_gap=sc.block_sync_max_gap, snapshot_dir=cfg.snapshot_path,
                                     snapshots_on_disk=sc.snapshots_on_disk, snapshot_disk_bytes=sc.snapshot_disk_bytes)
        sync = SyncService(SyncEnv(store, p2p, gen.chain_id, tuple(gen.validator_keys), chain), inbox,
                           checkpoint_interval=params.checkpoint_interval, registry=registry, log=log,
                           settings=sync_settings, genesis_index=lambda: genesis_index_entries(gen.ledger))
        outbox = outbox_for(self.byzantine, p2p, key, gen.chain_id, gen.validator_keys, log)
        consensus = ConsensusDriver(genesis=gen, key=key, params=params, store=store, mempool=mempool, p2p=outbox,
                                    sync=sync, inbox=inbox, chain=chain, health=health, time_offset=time_offset,
                                    registry=registry, log=log, position=position)
        status = NodeStatus(name=cfg.node.name, node_id=key.public_key, genesis=gen, store=store, mempool=mempool,
                            p2p=p2p, chain=chain, health=health, time_offset=time_offset)
        registry.register(NodeCollector(status))
        api = ApiServer(ApiDeps(settings=cfg.api, token_path=cfg.token_path, genesis=gen, store=store,
                                mempool=mempool, in_decided_block=consensus.pipeline.in_blocks,
                                acceptance=acceptance, p2p=p2p, status=status, time_offset=time_offset,
                                registry=registry, log=log), max_connections=api_connections)
        return Components(genesis=gen, key=key, log=log, registry=registry, store=store, mempool=mempool,
                          acceptance=acceptance, p2p=p2p, gossip=gossip, sync=sync, consensus=consensus, api=api, status=status,
                          health=health, chain=chain, time_offset=time_offset)


def _first_error(exc: BaseException) -> BaseException | None:
    """The first real error in a (possibly nested) exception group; None when there are only
    cancellations (an orderly stop)."""
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            found = _first_error(e)
            if found is not None:
                return found
        return None
    if isinstance(exc, asyncio.CancelledError):
        return None
    return exc

