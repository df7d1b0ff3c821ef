"""Frames from an asyncio stream: reads chunks, feeds the sans-I/O FrameReader, yields whole frames.

Rule: never buffers more than one maximum frame plus one read chunk; a too-large length header raises
`FrameTooLarge` before its payload is read. EOF mid-frame ends the stream like a clean EOF.
"""

from __future__ import annotations

import asyncio
from collections import deque

from protocol.framing import FrameReader


class FrameStream:
    __slots__ = ("_frames", "_reader", "bytes_in", "frames", "read_chunk")

    def __init__(self, reader: asyncio.StreamReader, max_frame: int, read_chunk: int = 256 * 1024) -> None:
        self._reader = reader
        self.frames = FrameReader(max_frame)
        self._frames: deque[bytes] = deque()
        self.read_chunk = read_chunk
        self.bytes_in = 0

    @property
    def max_frame(self) -> int:
        return self.frames.max_frame

    @max_frame.setter
    def max_frame(self, value: int) -> None:
        self.frames.max_frame = value

    async def next_frame(self) -> bytes | None:
        """The next whole frame, or None at EOF."""
        while not self._frames:
            chunk = await self._reader.read(self.read_chunk)
            if not chunk:
                return None
            self.bytes_in += len(chunk)
            self._frames.extend(self.frames.feed(chunk))
        return self._frames.popleft()

    def ready(self) -> list[bytes]:
        """Frames already buffered (no I/O)."""
        out = list(self._frames)
        self._frames.clear()
        return out
