"""The P2P service: listener, dialers with jittered backoff, the peer table and message routing.

Peers are identified by their Ed25519 node key; only genesis validators and configured observers get
past the handshake. Each pair of peers keeps one connection: when two exist, both sides keep the one
dialed by the lower public key (for two links dialed by the same side, the newer one). Messages are
routed by envelope type to handlers registered with `register`; `ping`/`pong` are answered here.
Inbound handshakes in progress are capped in total and per client address (node/connslots.py): at a
cap, a newcomer takes the place of the connection whose peer has stayed silent (named no allowed key)
the longest, else it is refused, so idle strangers cannot keep a restarting validator out.

Rule: this class owns every socket and task of the P2P layer; `run()` (the component's task) starts them
and `stop()` cancels and closes all of them within `stop_timeout`. Handlers run in the receiving
connection's reader task, in arrival order per peer, and must not block: hand work to a bounded queue.
A handler raising ProtocolError means the peer sent an invalid body: that connection is closed. Any other
error in a handler is a bug met on one message: the message is dropped and counted, the failure logged
(throttled per type, so a peer cannot flood the log with it), and the link stays. A dial loop that dies of an unexpected error ends `run()`, and with it
the node (fail-stop): a node that silently stopped dialling a validator would look healthy while it is not.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog

from node.connslots import ConnectionSlots, Slot, address_group
from node.logging import Throttle
from node.p2p.channel import OVERHEAD
from node.p2p.errors import HandshakeError, P2PError
from node.p2p.handshake import handshake
from node.p2p.metrics import P2PCollector, P2PStats
from node.p2p.peer import Connection, Peer, PeerIO
from node.p2p.stream import FrameStream
from node.p2p.types import P2PSettings, PeerAddr, PeerInfo
from protocol.crypto import PrivateKey
from protocol.errors import ProtocolError
from protocol.messages import ROUTED_TYPES, T_PING, T_PONG, T_TXS, Envelope, Ping, Pong, encode_envelope

Handler = Callable[[bytes, Any], Awaitable[None] | None]
PeerListener = Callable[[bytes, bool], None]
_GRACEFUL = ("stopping", "replaced", "duplicate")


class P2P:
    def __init__(self, key: PrivateKey, chain_id: str, *, validators: Iterable[bytes],
                 observers: Iterable[bytes] = (), dial: Iterable[PeerAddr] = (),
                 names: Mapping[bytes, str] | None = None, settings: P2PSettings | None = None,
                 log: Any = None, stop_timeout: float = 2.0) -> None:
        self.key = key
        self.public_key = key.public_key
        self.chain_id = chain_id
        self.settings = settings or P2PSettings()
        self.validators = frozenset(validators)
        self.allowed = self.validators | frozenset(observers)
        self.dial_targets = [d for d in dial if d.public_key != self.public_key]
        self.names: dict[bytes, str] = dict(names or {})
        for d in self.dial_targets:
            if d.name:
                self.names.setdefault(d.public_key, d.name)
        self.stats = P2PStats()
        self.log = log if log is not None else structlog.get_logger("smeledger.p2p")
        self.stop_timeout = stop_timeout
        self._io = PeerIO(self.settings, self.stats)
        self._handlers: dict[str, Handler] = {}
        self._listeners: list[PeerListener] = []
        self._peers: dict[bytes, Peer] = {}
        self._gone: dict[bytes, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._inbound = ConnectionSlots(total=self.settings.max_pending_handshakes,
                                        per_address=self.settings.max_pending_handshakes_per_address)
        self._stopping = False
        self._rng = random.Random()
        self._failed: asyncio.Future[None] | None = None
        self._throttle = Throttle()
        self.listen_port: int | None = None

    # ---- public interface -------------------------------------------------------------------------

    def register(self, msg_type: str, handler: Handler) -> None:
        """Route messages of `msg_type` (one of protocol.messages.ROUTED_TYPES or 'txs') to `handler`."""
        if msg_type not in ROUTED_TYPES and msg_type != T_TXS:
            raise P2PError(f"cannot register a handler for '{msg_type}'", reason="bad_type")
        self._handlers[msg_type] = handler

    def add_peer_listener(self, listener: PeerListener) -> None:
        """`listener(peer_key, connected)` is called when a peer becomes connected or fully disconnected."""
        self._listeners.append(listener)

    def send(self, peer: bytes, msg_type: str, body: Any) -> bool:
        """Queue one message; False when the peer is not connected or its send queue is full."""
        p = self._peers.get(peer)
        if p is None:
            return False
        return self._io.enqueue(p, msg_type, self._encode(msg_type, body))

    def broadcast(self, msg_type: str, body: Any, *, validators_only: bool = False) -> int:
        """Queue one message to every connected peer (or only validators); returns how many accepted it."""
        payload = self._encode(msg_type, body)
        n = 0
        for pk in sorted(self._peers):
            p = self._peers[pk]
            if validators_only and not p.validator:
                continue
            n += self._io.enqueue(p, msg_type, payload)
        return n

    def connected(self) -> list[bytes]:
        """Connected peer keys, sorted."""
        return sorted(self._peers)

    def is_connected(self, peer: bytes) -> bool:
        return peer in self._peers

    def has_room(self, peer: bytes, nbytes: int = 0) -> bool:
        """True when `peer` is connected and its send queue would accept `nbytes` more."""
        p = self._peers.get(peer)
        if p is None or p.conn is None or p.conn.close_reason is not None:
            return False
        s = self.settings
        return len(p.queue) < s.send_queue_frames and p.queue_bytes + nbytes <= s.send_queue_bytes

    def is_validator(self, peer: bytes) -> bool:
        return peer in self.validators

    def peers(self) -> list[PeerInfo]:
        out = []
        for pk in sorted(self._peers):
            p = self._peers[pk]
            if p.conn is not None:
                out.append(p.conn.info(p))
        return out

    def collector(self) -> P2PCollector:
        return P2PCollector(self.stats)

    async def run(self) -> None:
        """The component's task: listen and dial until cancelled (or a dial loop fails), then stop."""
        self._failed = asyncio.get_running_loop().create_future()
        if self._server is None:
            await self.start()
        try:
            await self._failed
        finally:
            await self.stop()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        if exc is not None and self._failed is not None and not self._failed.done():
            self._failed.set_exception(exc)

    async def start(self) -> None:
        s = self.settings
        self._server = await asyncio.start_server(self._on_inbound, s.listen_host, s.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        self.log.info("p2p_listening", host=s.listen_host, port=self.listen_port,
                      dial=len(self.dial_targets), allowed=len(self.allowed))
        for target in self.dial_targets:
            task = self._spawn(self._dial_loop(target), f"p2p-dial-{target.public_key.hex()[:8]}")
            task.add_done_callback(self._task_done)

    async def stop(self) -> None:
        """Stop intake, close every connection and cancel every task, within `stop_timeout` seconds."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for p in list(self._peers.values()):
            if p.conn is not None:
                p.conn.close("stopping")
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.stop_timeout)
            if pending:
                self.log.warning("p2p_stop_timeout", pending=len(pending))
        self._peers.clear()
        self.log.info("p2p_stopped")

    # ---- internals ----------------------------------------------------------------------------------

    def _encode(self, msg_type: str, body: Any) -> bytes:
        payload = encode_envelope(msg_type, body)
        self._check_size(payload)
        return payload

    def _check_size(self, payload: bytes) -> None:
        if len(payload) + OVERHEAD > self.settings.max_frame:
            raise P2PError(f"message of {len(payload)} bytes exceeds the frame limit", reason="message_too_large")

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _gone_event(self, pk: bytes) -> asyncio.Event:
        ev = self._gone.get(pk)
        if ev is None:
            ev = self._gone[pk] = asyncio.Event()
        return ev

    def _jitter(self, delay: float) -> float:
        return delay * (0.5 + self._rng.random() / 2)

    async def _dial_loop(self, target: PeerAddr) -> None:
        s = self.settings
        backoff = s.backoff_initial
        log = self.log.bind(peer=target.public_key.hex()[:16], peer_name=target.name,
                            address=f"{target.host}:{target.port}")
        while not self._stopping:
            gone = self._gone_event(target.public_key)
            if target.public_key in self._peers:
                gone.clear()
                await gone.wait()
                backoff = s.backoff_initial
                await asyncio.sleep(self._jitter(s.backoff_initial))
                continue
            try:
                async with asyncio.timeout(s.connect_timeout):
                    reader, writer = await asyncio.open_connection(target.host, target.port)
            except (OSError, TimeoutError) as exc:
                log.debug("p2p_dial_failed", error=str(exc) or type(exc).__name__, retry_s=round(backoff, 3))
                await asyncio.sleep(self._jitter(backoff))
                backoff = min(backoff * 2, s.backoff_max)
                continue
            adopted = await self._serve(reader, writer, initiator=True, expected=target.public_key)
            if adopted:
                backoff = s.backoff_initial
            await asyncio.sleep(self._jitter(backoff))
            if not adopted:
                backoff = min(backoff * 2, s.backoff_max)

    def _on_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback: the link runs in a task this class owns (and can cancel on stop).
        group = address_group(writer.get_extra_info("peername"))
        slot = "stopping" if self._stopping else self._inbound.admit(
            group, asyncio.get_running_loop().time(), writer.transport.abort)
        if isinstance(slot, str):
            self.stats.handshake_failures["too_many_pending"] += 1
            self._throttle(self.log.warning, "p2p_inbound_refused", group, address=group, cap=slot,
                           pending=len(self._inbound), from_address=self._inbound.held_by(group))
            writer.transport.abort()
            return
        self._spawn(self._serve(reader, writer, initiator=False, expected=None, slot=slot), "p2p-inbound")

    def pending_handshakes(self) -> int:
        """Inbound handshakes in progress."""
        return len(self._inbound)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, initiator: bool,
                     expected: bytes | None, slot: Slot | None = None) -> bool:
        """Handshake, adopt, run the link until it ends; True when the link was adopted. An inbound link
        holds `slot` until its handshake ends; the slot stops being evictable once the peer names an
        allowed key."""
        s = self.settings
        peername = writer.get_extra_info("peername")
        address = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        stream = FrameStream(reader, s.max_frame, s.read_chunk)
        try:
            res = await handshake(stream, writer, self.key, self.chain_id, initiator=initiator,
                                  is_allowed=self.allowed.__contains__, timeout=s.handshake_timeout,
                                  expected_peer=expected, on_hello=None if slot is None else lambda _k: slot.busy())
        except HandshakeError as exc:
            reason = "evicted" if slot is not None and slot.released else exc.reason
            self.stats.handshake_failures[reason] += 1
            self._throttle(self.log.warning, "p2p_handshake_failed", reason, reason=reason,
                           error=str(exc), address=address, direction="out" if initiator else "in")
            writer.transport.abort()
            return False
        finally:
            if slot is not None:
                self._inbound.release(slot)
        pk = res.peer_key
        log = self.log.bind(peer=pk.hex()[:16], peer_name=self.names.get(pk, ""))
        conn = Connection(pk, self.public_key if initiator else pk, "out" if initiator else "in", stream,
                          writer, res.channel, address, log)
        if self._stopping or not self._adopt(conn):
            conn.close("duplicate")
            with_reason = "stopping" if self._stopping else "duplicate"
            self.stats.disconnects[with_reason] += 1
            return False
        peer = self._peers[pk]
        self.stats.connections += 1
        log.info("p2p_peer_connected", direction=conn.direction, address=address)
        writer_task = self._spawn(self._io.write_loop(peer, conn), "p2p-writer")
        ping_task = self._spawn(self._io.ping_loop(peer, conn), "p2p-ping")
        reason = "cancelled"
        try:
            reason = await self._io.read_loop(peer, conn, self._dispatch)
        finally:
            conn.close(reason)
            writer_task.cancel()
            ping_task.cancel()
            self._release(conn)
            self.stats.disconnects[conn.close_reason or reason] += 1
            level = log.info if (conn.close_reason or reason) in (*_GRACEFUL, "eof") else log.warning
            level("p2p_peer_disconnected", reason=conn.close_reason or reason, direction=conn.direction)
        return True

    def _adopt(self, conn: Connection) -> bool:
        pk = conn.peer_key
        peer = self._peers.get(pk)
        if peer is None:
            peer = Peer(public_key=pk, name=self.names.get(pk, ""), validator=pk in self.validators)
            peer.conn = conn
            self._peers[pk] = peer
            for listener in self._listeners:
                listener(pk, True)
            return True
        old = peer.conn
        if old is not None and old.close_reason is None:
            preferred = min(self.public_key, pk)
            new_wins = (conn.initiator_key == old.initiator_key) or (conn.initiator_key == preferred)
            if not new_wins:
                return False
            peer.conn = conn
            old.close("replaced")
        else:
            peer.conn = conn
        peer.wake.set()
        return True

    def _release(self, conn: Connection) -> None:
        pk = conn.peer_key
        peer = self._peers.get(pk)
        if peer is None or peer.conn is not conn:
            return
        del self._peers[pk]
        peer.queue.clear()
        peer.queue_bytes = 0
        peer.conn = None
        peer.wake.set()
        self._gone_event(pk).set()
        for listener in self._listeners:
            listener(pk, False)

    async def _dispatch(self, peer: Peer, conn: Connection, env: Envelope) -> None:
        t = env.type
        if t == T_PING:
            ping = Ping.from_value(env.body)
            self._io.enqueue(peer, T_PONG, encode_envelope(T_PONG, Pong(ping.n).to_value()))
            return
        if t == T_PONG:
            self._io.on_pong(peer, conn, Pong.from_value(env.body).n)
            return
        handler = self._handlers.get(t)
        if handler is None:
            self.stats.unhandled[t] += 1
            return
        try:
            result = handler(peer.public_key, env.body)
            if inspect.isawaitable(result):
                await result
        except ProtocolError as exc:
            self.stats.rejected_frames["bad_body:" + t] += 1
            conn.log.warning("p2p_message_rejected", type=t, code=exc.code, error=exc.message)
            conn.close("bad_body")
        except Exception as exc:  # a bug met on one message: that message is lost (consensus retransmits)
            self.stats.rejected_frames["handler_failed:" + t] += 1
            self._throttle(conn.log.error, "p2p_handler_failed", t, type=t, error=repr(exc))
