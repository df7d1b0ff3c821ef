"""Canonical msgpack: the one encoding of every signed or hashed value in smeledger.

Rule: maps have str keys sorted by their UTF-8 bytes, integers use the shortest form, bytes travel as
bin, strings as str; no floats, no ext types. `decode` accepts exactly what `encode` produces and
nothing else (it re-encodes and compares), within explicit size and depth limits, and raises a typed
`CodecError` for every rejection. This module never performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from protocol.errors import (
    ExtNotAllowed,
    FloatNotAllowed,
    MalformedEncoding,
    NonCanonicalEncoding,
    TooDeep,
    TooLarge,
    UnsupportedType,
)

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

Value = None | bool | int | str | bytes | list["Value"] | dict[str, "Value"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds applied while decoding untrusted bytes."""

    max_bytes: int = 4 * 1024 * 1024
    max_depth: int = 16
    max_str: int = 64 * 1024
    max_bin: int = 4 * 1024 * 1024
    max_array: int = 100_000
    max_map: int = 4_096


DEFAULT_LIMITS = Limits()


# Types msgpack packs canonically as they are. Map keys are compared as str: UTF-8 preserves code point
# order, so sorting str keys sorts their encoded bytes.
_PLAIN = frozenset({str, bytes, bool, type(None)})
_CONTAINERS = frozenset({dict, list, tuple})


def _leaf(v: Any) -> Any:
    """A non-container value that is not plain: an int in range, or a buffer; anything else is refused."""
    if type(v) is int:
        if INT_MIN <= v <= INT_MAX:
            return v
        raise UnsupportedType("integer outside the 64-bit range")
    if isinstance(v, float):
        raise FloatNotAllowed("floats are not allowed; use integer minor units")
    if isinstance(v, bytearray | memoryview):
        return bytes(v)
    if isinstance(v, bool | int | str | bytes):  # subclasses (e.g. IntEnum) travel as their base value
        return bool(v) if isinstance(v, bool) else int(v) if isinstance(v, int) else \
            str(v) if isinstance(v, str) else bytes(v)
    raise UnsupportedType(f"type {type(v).__name__} is not encodable")


def _too_deep(depth: int, max_depth: int) -> TooDeep:
    return TooDeep(f"nesting deeper than {max_depth}")


def _canon(obj: Any, depth: int, max_depth: int) -> Any:
    """Validate types and return a copy whose maps iterate in canonical key order."""
    t = type(obj)
    if t is dict:
        if depth >= max_depth and obj:
            raise _too_deep(depth, max_depth)
        for k in obj:
            if type(k) is not str:
                raise UnsupportedType("map keys must be str")
        out = {}
        for k in sorted(obj):
            v = obj[k]
            tv = type(v)
            out[k] = v if tv in _PLAIN else _canon(v, depth + 1, max_depth) if tv in _CONTAINERS else _leaf(v)
        return out
    if t is list or t is tuple:
        if depth >= max_depth and obj:
            raise _too_deep(depth, max_depth)
        return [v if type(v) in _PLAIN else _canon(v, depth + 1, max_depth) if type(v) in _CONTAINERS
                else _leaf(v) for v in obj]
    if t in _PLAIN:
        return obj
    return _leaf(obj)


def _check(obj: Any, depth: int, max_depth: int) -> bool:
    """Validate types without copying; False as soon as something must be rewritten (a map's keys out
    of canonical order, a leaf that needs converting), so the caller falls back to `_canon`.

    The fast path of `encode` (and the whole check of `decode`, which refuses on False): msgpack itself
    writes ints in their shortest form and keeps map order, so a value that passes packs canonically.
    """
    t = type(obj)
    if t is dict:
        if depth >= max_depth and obj:
            raise _too_deep(depth, max_depth)
        prev = None
        for k, v in obj.items():
            if type(k) is not str:
                raise UnsupportedType("map keys must be str")
            if prev is not None and k <= prev:
                return False
            prev = k
            tv = type(v)
            if tv in _CONTAINERS:
                if not _check(v, depth + 1, max_depth):
                    return False
            elif tv not in _PLAIN and (tv is not int or not INT_MIN <= v <= INT_MAX):
                _leaf(v)
                return False
        return True
    if t is list or t is tuple:
        if depth >= max_depth and obj:
            raise _too_deep(depth, max_depth)
        for v in obj:
            tv = type(v)
            if tv in _CONTAINERS:
                if not _check(v, depth + 1, max_depth):
                    return False
            elif tv not in _PLAIN and (tv is not int or not INT_MIN <= v <= INT_MAX):
                _leaf(v)
                return False
        return True
    if t in _PLAIN:
        return True
    _leaf(obj)
    return t is int


def encode(obj: Any, *, max_depth: int = DEFAULT_LIMITS.max_depth) -> bytes:
    """Encode `obj` canonically. Raises CodecError for floats, non-str keys and unknown types."""
    if not _check(obj, 0, max_depth):
        obj = _canon(obj, 0, max_depth)
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _reject_ext(code: int, data: bytes) -> Any:
    raise ExtNotAllowed(f"msgpack ext type {code} is not allowed")


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Strictly decode canonical msgpack; every deviation raises a specific CodecError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UnsupportedType("decode takes bytes")
    if len(data) > limits.max_bytes:
        raise TooLarge(f"{len(data)} bytes exceeds the limit of {limits.max_bytes}")
    if len(data) == 0:
        raise MalformedEncoding("empty input")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_reject_ext,
            max_str_len=limits.max_str,
            max_bin_len=limits.max_bin,
            max_array_len=limits.max_array,
            max_map_len=limits.max_map,
        )
    except ExtNotAllowed:
        raise
    except msgpack.ExtraData as exc:
        raise MalformedEncoding("trailing bytes after the value") from exc
    except msgpack.StackError as exc:
        raise TooDeep("nesting too deep") from exc
    except ValueError as exc:
        text = str(exc)
        if "exceeds max" in text:
            raise TooLarge(text) from exc
        raise MalformedEncoding(text or "invalid msgpack") from exc
    except Exception as exc:  # msgpack raises assorted types for garbage input
        raise MalformedEncoding(f"invalid msgpack: {type(exc).__name__}") from exc
    try:
        ordered = _check(obj, 0, limits.max_depth)
        again = msgpack.packb(obj, use_bin_type=True)
    except UnicodeEncodeError as exc:
        raise MalformedEncoding("invalid UTF-8 in a string") from exc
    if not ordered or again != bytes(data):
        raise NonCanonicalEncoding("encoding is not canonical (key order, int width, duplicates or type)")
    return obj
