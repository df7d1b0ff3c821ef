"""The protocol layer's error tree.

Every rejection the protocol can make is a subclass of `ProtocolError` with a stable, machine-readable
`code` that the API returns to clients verbatim. Codes never change meaning once released.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every error raised by pure protocol logic."""

    code = "protocol_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class CodecError(ProtocolError):
    """Bytes that are not canonical smeledger msgpack."""

    code = "codec_error"


class MalformedEncoding(CodecError):
    code = "malformed"


class NonCanonicalEncoding(CodecError):
    code = "non_canonical"


class FloatNotAllowed(CodecError):
    code = "float_not_allowed"


class ExtNotAllowed(CodecError):
    code = "ext_not_allowed"


class TooDeep(CodecError):
    code = "too_deep"


class TooLarge(CodecError):
    code = "too_large"


class UnsupportedType(CodecError):
    code = "unsupported_type"


class FieldError(ProtocolError):
    """A decoded value has a missing, extra or mistyped field."""

    code = "bad_field"


class FrameError(ProtocolError):
    code = "bad_frame"


class FrameTooLarge(FrameError):
    code = "frame_too_large"
