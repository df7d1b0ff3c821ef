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


def _canon(obj: Any, depth: int, max_depth: int) -> Any:
    """Validate types and return a structure whose dicts iterate in canonical key order."""
    if depth > max_depth:
        raise TooDeep(f"nesting deeper than {max_depth}")
    if obj is None or isinstance(obj, (bool, str, bytes)):
        return obj
    if isinstance(obj, int):
        if obj < INT_MIN or obj > INT_MAX:
            raise UnsupportedType("integer outside the 64-bit range")
        return obj
    if isinstance(obj, float):
        raise FloatNotAllowed("floats are not allowed; use integer minor units")
    if isinstance(obj, (list, tuple)):
        return [_canon(v, depth + 1, max_depth) for v in obj]
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, str):
                raise UnsupportedType("map keys must be str")
        keys = sorted(obj, key=lambda k: k.encode("utf-8"))
        return {k: _canon(obj[k], depth + 1, max_depth) for k in keys}
    if isinstance(obj, bytearray | memoryview):
        return bytes(obj)
    raise UnsupportedType(f"type {type(obj).__name__} is not encodable")


_CONTAINERS = (dict, list, tuple)


def _check(obj: Any, depth: int, max_depth: int) -> bool:
    """Validate types without copying; False when some map's keys are not in canonical order.

    The fast path of `encode` (and the whole check of `decode`): msgpack itself writes ints in their
    shortest form and keeps map order, so a value that passes here packs canonically as it is.
    """
    if depth > max_depth:
        raise TooDeep(f"nesting deeper than {max_depth}")
    t = type(obj)
    ordered = True
    if t is dict:
        prev = b""
        first = True
        for k, v in obj.items():
            if type(k) is not str:
                raise UnsupportedType("map keys must be str")
            kb = k.encode("utf-8")
            if not first and kb <= prev:
                ordered = False
            prev, first = kb, False
            tv = type(v)
            if tv in _CONTAINERS or tv is float or (tv is int and not INT_MIN <= v <= INT_MAX):
                ordered = _check(v, depth + 1, max_depth) and ordered
            elif not (v is None or tv in _SCALARS):
                _canon(v, depth + 1, max_depth)
    elif t is list or t is tuple:
        for v in obj:
            tv = type(v)
            if tv in _CONTAINERS or tv is float or (tv is int and not INT_MIN <= v <= INT_MAX):
                ordered = _check(v, depth + 1, max_depth) and ordered
            elif not (v is None or tv in _SCALARS):
                _canon(v, depth + 1, max_depth)
    else:
        _canon(obj, depth, max_depth)
    return ordered


_SCALARS = (bool, int, str, bytes)


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
