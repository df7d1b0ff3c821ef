"""`Node`: builds one node from its config and runs it in one asyncio TaskGroup.

Start order: logging, storage (a locked database is a clear `db_locked` error), genesis check/apply at
height 0, mempool, P2P + tx gossip, consensus (the seam below), API. SIGTERM/SIGINT stop it in reverse:
close intake (the API answers 503), stop consensus, gossip and P2P, drain the API, close the database;
all within `SHUTDOWN_BUDGET_S` seconds.

Consensus: `ConsensusDriver(ctx)` (node/consensus.py, which also owns sync) finds everything in `ctx`:
storage (`ctx.db`, `ctx.state`, `ctx.blocks`, `ctx.wal`), `ctx.mempool`, `ctx.p2p`, `ctx.registry` for
its metrics, `ctx.position`/`ctx.log` for log context, `ctx.chain` for `/status`, `ctx.time_offset`
for the testnet block-time offset, and `ctx.task_group` to spawn its long-lived tasks.

Rule: this module owns lifetimes only; it holds no protocol logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from node import genesis as genesis_mod
from node.api.metrics import NodeCollector
from node.api.server import ApiServer
from node.config import Config
from node.consensus import ConsensusDriver
from node.context import NodeContext
from node.errors import ConfigError, NodeError
from node.keyfile import load_node_key
from node.logging import Position, node_logger
from node.mempool import Mempool, MempoolLimits
from node.p2p import P2P, P2PSettings, PeerAddr, TxGossip
from protocol.errors import ProtocolError
from protocol.ledger import admission_error, apply_genesis, next_nonce
from protocol.ledger import keys as ledger_keys
from protocol.state import Overlay
from protocol.tx import SignedTx
from storage.blocks import BlockStore
from storage.db import Database
from storage.errors import StorageError
from storage.meta import ChainMeta
from storage.state import StateStore
from storage.wal import ConsensusWal

SHUTDOWN_BUDGET_S = 5.0
P2P_STOP_TIMEOUT_S = 1.5


@contextlib.asynccontextmanager
async def _listening(what: str, host: str, port: int) -> AsyncIterator[None]:
    """Turn a failed bind into a NodeError that names the address and the config setting."""
    try:
        yield
    except OSError as exc:
        raise NodeError(f"cannot listen on {host}:{port} for {what} ({exc.strerror or exc}); is another "
                        f"process using it? change {what}.port in config.toml", code="bind_failed") from None


class _Stopped(Exception):
    """Raised from the TaskGroup body after an orderly shutdown, to cancel leftover tasks."""


class Node:
    def __init__(self, config: Config, *, log_stream: Any = None) -> None:
        self.config = config
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._log_stream = log_stream
        self.ctx: NodeContext | None = None
        self.api: ApiServer | None = None
        self.timings: dict[str, float] = {}

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def run(self, *, install_signals: bool = False) -> None:
        """Start everything, serve until `request_stop()` (or a signal), then shut down in order."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        t0 = time.monotonic()
        try:
            async with asyncio.TaskGroup() as tg:
                try:
                    await self._start(tg)
                    self.timings["startup_s"] = time.monotonic() - t0
                    assert self.ctx is not None
                    self.ctx.log.info("node_started", startup_ms=int(self.timings["startup_s"] * 1000),
                                      api=self.api.url if self.api else None, p2p_port=self._p2p_port())
                    self.ready.set()
                    await self._stop_requested.wait()
                finally:
                    t1 = time.monotonic()
                    await self._shutdown()
                    self.timings["shutdown_s"] = time.monotonic() - t1
                raise _Stopped  # makes the TaskGroup cancel any task a component left running
        except BaseExceptionGroup as group:
            errors = [e for e in group.exceptions if not isinstance(e, _Stopped)]
            if not errors:
                return
            # A start error or a failed component task: report the first real error itself.
            first = errors[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            if self.ctx is not None and not isinstance(first, (NodeError, ProtocolError, StorageError)):
                self.ctx.log.error("node_failed", error=repr(first), exc_info=first)
            raise first from None
        finally:
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            self.stopped.set()

    def _p2p_port(self) -> int | None:
        p2p = self.ctx.p2p if self.ctx else None
        return getattr(p2p, "listen_port", None)

    # ---- start -------------------------------------------------------------------------------------

    async def _start(self, tg: asyncio.TaskGroup) -> None:
        cfg = self.config
        gen = genesis_mod.load(cfg.node.genesis_file)
        if gen.chain_id != cfg.node.chain_id:
            raise ConfigError(f"config error: node.chain_id is {cfg.node.chain_id!r} but the genesis file "
                              f"{cfg.node.genesis_file} is for chain {gen.chain_id!r}")
        key = load_node_key(cfg.node.key_file)
        position = Position()
        log = node_logger(cfg.node.name, position, cfg.logging.level, self._log_stream)
        ctx = NodeContext(config=cfg, genesis=gen, key=key, log=log, position=position)
        ctx.time_offset.allowed = cfg.testnet.allow_time_offset
        ctx.task_group = tg
        self.ctx = ctx
        log.info("node_starting", node_id=ctx.node_id, chain_id=gen.chain_id,
                 role="validator" if ctx.is_validator else "observer", home=str(cfg.home))

        # storage
        db = await asyncio.to_thread(Database.open, cfg.node.data_dir)
        ctx.db = db
        ctx.registry.register(NodeCollector(ctx))
        ChainMeta(db).bind(gen.chain_id, gen.hash)
        ctx.state = await asyncio.to_thread(partial(StateStore, db, index_prefixes=ledger_keys.INDEX_PREFIXES))
        ctx.blocks = BlockStore(db, ctx.state)
        ctx.wal = ConsensusWal(db)
        if ctx.blocks.last_block_hash() is None:
            self._apply_genesis(ctx)
        position.update(height=ctx.blocks.height())
        log.info("storage_opened", height=ctx.blocks.height(), state_root=ctx.blocks.state_root().hex())

        # mempool
        state = ctx.state
        live = state.reader(snapshot=False)
        m = cfg.mempool
        def sender_check(tx: SignedTx) -> tuple[str, str] | None:
            err = admission_error(live, tx)
            return None if err is None else (err.code, err.message)

        ctx.mempool = Mempool(gen.chain_id, lambda k: next_nonce(live, k), sender_check=sender_check,
                              limits=MempoolLimits(max_txs=m.max_txs, max_bytes=m.max_bytes,
                                                   per_sender_max=m.per_sender_max,
                                                   nonce_window=m.nonce_window,
                                                   max_batch=cfg.api.max_batch_txs))
        ctx.registry.register(ctx.mempool.collector())

        # p2p + gossip
        p = cfg.p2p
        settings = P2PSettings(listen_host=p.host, listen_port=p.port, max_frame=p.max_frame,
                               send_queue_frames=p.send_queue_frames, send_queue_bytes=p.send_queue_bytes)
        names = {v.public_key: v.name for v in gen.validators}
        ctx.p2p = P2P(key, gen.chain_id, validators=gen.validator_keys, observers=p.observers,
                      dial=[PeerAddr(x.public_key, x.host, x.port, x.name) for x in p.peers],
                      names=names, settings=settings, log=log.bind(component="p2p"),
                      stop_timeout=P2P_STOP_TIMEOUT_S)
        ctx.registry.register(ctx.p2p.collector())
        ctx.gossip = TxGossip(ctx.p2p, ctx.mempool, settings, log=log.bind(component="gossip"))
        async with _listening("p2p", p.host, p.port):
            await ctx.p2p.start()
        await ctx.gossip.start()

        # consensus (the lead's driver) and API
        ctx.consensus = ConsensusDriver(ctx)
        if ctx.consensus is not None:
            await ctx.consensus.start()
            chain = ctx.chain
            ctx.gossip.reoffer_target = lambda: chain.primary  # stale txs go to whoever proposes now
        self.api = ApiServer(ctx)
        async with _listening("api", cfg.api.host, cfg.api.port):
            await self.api.start()
        ctx.accepting = True

    def _apply_genesis(self, ctx: NodeContext) -> None:
        assert ctx.state is not None and ctx.blocks is not None
        overlay = Overlay(ctx.state.reader(snapshot=False))
        apply_genesis(overlay, ctx.genesis.ledger)
        staged = ctx.state.stage(overlay.changes())
        ctx.blocks.commit_genesis(staged, ctx.genesis.hash)
        ctx.log.info("genesis_applied", genesis_hash=ctx.genesis.hash.hex(), state_root=staged.new_root.hex())

    # ---- stop --------------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        ctx.accepting = False
        ctx.log.info("node_stopping")
        try:
            async with asyncio.timeout(SHUTDOWN_BUDGET_S - 0.5):
                if ctx.consensus is not None:
                    await ctx.consensus.stop()
                if ctx.gossip is not None:
                    await ctx.gossip.stop()
                if ctx.p2p is not None:
                    await ctx.p2p.stop()
                if self.api is not None:
                    await self.api.stop()
        except TimeoutError:
            ctx.log.warning("node_stop_timeout", budget_s=SHUTDOWN_BUDGET_S)
        finally:
            if ctx.mempool is not None:
                ctx.mempool.close()
            if ctx.db is not None:
                ctx.db.close()
            ctx.log.info("node_stopped")
