"""One authenticated link: the peer's bounded send queue, its writer, its reader and its keepalive.

A `Peer` is the per-public-key state that outlives a replaced connection (send queue, counters); a
`Connection` is one live socket with its sealed channel. Exactly one writer task drains a peer's queue,
sealing each payload and coalescing queued frames into one write.

Rule: the queue is bounded in frames and bytes; `enqueue` never blocks: when full it drops the newest
message and returns False, and a peer whose queue stays full for `slow_peer_timeout` is disconnected.
Anything a peer sends that fails to authenticate, decode or fit closes that connection, never the node.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from node.p2p.channel import SecureChannel
from node.p2p.errors import ChannelError
from node.p2p.metrics import P2PStats
from node.p2p.stream import FrameStream
from node.p2p.types import P2PSettings, PeerInfo
from protocol.codec import Limits
from protocol.errors import FrameTooLarge, ProtocolError
from protocol.messages import SESSION_TYPES, T_PING, Envelope, Ping, encode_envelope, envelope_limits


@dataclass(eq=False)
class Peer:
    public_key: bytes
    name: str
    validator: bool
    queue: deque[tuple[str, bytes]] = field(default_factory=deque)
    queue_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    full_since: float | None = None
    conn: Connection | None = None
    dropped: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    frames_out: int = 0
    rtt_ms: float | None = None


class Connection:
    """A live, authenticated socket. Owned by the task that runs `serve`."""

    def __init__(self, peer_key: bytes, initiator_key: bytes, direction: str, stream: FrameStream,
                 writer: asyncio.StreamWriter, channel: SecureChannel, address: str,
                 log: structlog.typing.FilteringBoundLogger) -> None:
        self.peer_key = peer_key
        self.initiator_key = initiator_key
        self.direction = direction
        self.stream = stream
        self.writer = writer
        self.channel = channel
        self.address = address
        self.log = log
        self.since_ms = int(time.time() * 1000)
        self.last_rx = asyncio.get_running_loop().time()
        self.close_reason: str | None = None
        self._ping_n = 0
        self._ping_sent: tuple[int, float] | None = None

    def close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort() if reason not in ("stopping", "replaced", "duplicate") else transport.close()

    def info(self, peer: Peer) -> PeerInfo:
        return PeerInfo(public_key=self.peer_key.hex(), name=peer.name, address=self.address,
                        direction=self.direction, validator=peer.validator, connected_since_ms=self.since_ms,
                        rtt_ms=peer.rtt_ms, bytes_in=peer.bytes_in, bytes_out=peer.bytes_out,
                        frames_in=peer.frames_in, frames_out=peer.frames_out, queue_frames=len(peer.queue),
                        queue_bytes=peer.queue_bytes, dropped_frames=peer.dropped)


Dispatch = Callable[[Peer, Connection, Envelope], Awaitable[None]]


class PeerIO:
    """Writer, reader and keepalive loops; shared by all connections of one P2P instance."""

    def __init__(self, settings: P2PSettings, stats: P2PStats) -> None:
        self.s = settings
        self.stats = stats
        self.limits: Limits = envelope_limits(settings.max_frame)

    def enqueue(self, peer: Peer, msg_type: str, payload: bytes) -> bool:
        conn = peer.conn
        if conn is None or conn.close_reason is not None:
            return False
        s = self.s
        if len(peer.queue) >= s.send_queue_frames or peer.queue_bytes + len(payload) > s.send_queue_bytes:
            peer.dropped += 1
            self.stats.dropped_sends[msg_type] += 1
            now = asyncio.get_running_loop().time()
            if peer.full_since is None:
                peer.full_since = now
            elif now - peer.full_since > s.slow_peer_timeout:
                conn.log.warning("p2p_slow_peer_disconnected", queue_frames=len(peer.queue),
                                 queue_bytes=peer.queue_bytes)
                conn.close("slow_peer")
            return False
        peer.queue.append((msg_type, payload))
        peer.queue_bytes += len(payload)
        peer.wake.set()
        return True

    async def write_loop(self, peer: Peer, conn: Connection) -> None:
        writer = conn.writer
        seal = conn.channel.seal
        cap = self.s.write_batch_bytes
        try:
            while True:
                if peer.conn is not conn:
                    return
                if not peer.queue:
                    peer.wake.clear()
                    await peer.wake.wait()
                    continue
                parts: list[bytes] = []
                size = 0
                n = 0
                q = peer.queue
                while q and size < cap:
                    _, payload = q.popleft()
                    peer.queue_bytes -= len(payload)
                    sealed = seal(payload)
                    parts.append(len(sealed).to_bytes(4, "big"))
                    parts.append(sealed)
                    size += len(sealed) + 4
                    n += 1
                peer.full_since = None
                writer.write(b"".join(parts))
                peer.frames_out += n
                peer.bytes_out += size
                self.stats.frames_out += n
                self.stats.bytes_out += size
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            conn.log.info("p2p_write_failed", error=str(exc))
            conn.close("write_failed")

    async def ping_loop(self, peer: Peer, conn: Connection) -> None:
        """Heartbeat: a ping every `ping_interval`; a link that brought no byte for `idle_timeout` is dead
        (a cut cable or a black-holed route sends no FIN: only silence shows it) and is closed, so the dial
        loop redials it and `peers` tells the truth. Bytes of a frame still arriving count as life (a big
        block on a slow link is not silence), and a round in which this node's own loop was stalled is not
        judged: the bytes may be waiting unread in our socket."""
        loop = asyncio.get_running_loop()
        interval = self.s.ping_interval
        seen = conn.stream.bytes_in
        due = loop.time() + interval
        while conn.close_reason is None:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            stalled = now - due > interval  # our loop ran late: judge nothing this round
            due = now + interval
            if conn.stream.bytes_in != seen:
                seen = conn.stream.bytes_in
                conn.last_rx = now
            elif stalled:
                conn.last_rx = max(conn.last_rx, now - interval)
            if now - conn.last_rx > self.s.idle_timeout:
                conn.log.info("p2p_peer_idle", idle_s=round(now - conn.last_rx, 3))
                conn.close("idle_timeout")
                return
            conn._ping_n += 1
            conn._ping_sent = (conn._ping_n, now)
            self.enqueue(peer, T_PING, encode_envelope(T_PING, Ping(conn._ping_n).to_value()))

    def on_pong(self, peer: Peer, conn: Connection, n: int) -> None:
        sent = conn._ping_sent
        if sent is not None and sent[0] == n:
            peer.rtt_ms = round((asyncio.get_running_loop().time() - sent[1]) * 1000, 3)
            conn._ping_sent = None

    async def read_loop(self, peer: Peer, conn: Connection, dispatch: Dispatch) -> str:
        """Read until EOF or a violation; returns the close reason."""
        stream = conn.stream
        opener = conn.channel.open
        loop = asyncio.get_running_loop()
        limits = self.limits
        stats = self.stats
        stream.max_frame = self.s.max_frame
        before = stream.bytes_in
        try:
            while True:
                payload = await stream.next_frame()
                now_in = stream.bytes_in
                peer.bytes_in += now_in - before
                stats.bytes_in += now_in - before
                before = now_in
                if payload is None:
                    return "eof"
                conn.last_rx = loop.time()
                plain = opener(payload)
                env = Envelope.decode(plain, limits, SESSION_TYPES)
                peer.frames_in += 1
                stats.frames_in += 1
                await dispatch(peer, conn, env)
                if conn.close_reason is not None:
                    return conn.close_reason
        except ChannelError as exc:
            return self._reject(conn, exc.reason, str(exc))
        except FrameTooLarge as exc:
            return self._reject(conn, "frame_too_large", exc.message)
        except ProtocolError as exc:
            return self._reject(conn, "undecodable:" + exc.code, exc.message)
        except (ConnectionError, OSError) as exc:
            return conn.close_reason or f"read_failed:{type(exc).__name__}"

    def _reject(self, conn: Connection, reason: str, message: str) -> str:
        self.stats.rejected_frames[reason] += 1
        conn.log.warning("p2p_frame_rejected", reason=reason, error=message)
        conn.close(reason)
        return reason
