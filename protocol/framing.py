"""Sans-I/O length-prefixed framing: 4-byte big-endian length, then the payload.

Rule: `FrameReader.feed` accepts any chunking of the byte stream and returns complete frames; a length
above the configured maximum raises `FrameTooLarge` before any payload is buffered, so a hostile peer
can never make the reader hold more than one maximum frame plus a header.
"""

from __future__ import annotations

from protocol.errors import FrameTooLarge

HEADER = 4
DEFAULT_MAX_FRAME = 4 * 1024 * 1024


def frame(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    if len(payload) > max_frame:
        raise FrameTooLarge(f"frame of {len(payload)} bytes exceeds {max_frame}")
    return len(payload).to_bytes(HEADER, "big") + payload


class FrameReader:
    __slots__ = ("_buf", "_need", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._need: int | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            if self._need is None:
                if len(self._buf) < HEADER:
                    break
                n = int.from_bytes(self._buf[:HEADER], "big")
                if n > self.max_frame:
                    raise FrameTooLarge(f"peer announced a frame of {n} bytes (limit {self.max_frame})")
                del self._buf[:HEADER]
                self._need = n
            if len(self._buf) < self._need:
                break
            out.append(bytes(self._buf[: self._need]))
            del self._buf[: self._need]
            self._need = None
        return out
