"""Field readers used by every `from_wire`: each checks presence, type and bounds and names the field.

Rule: a decoded map becomes a typed value only through these readers, so every rejection is a
`FieldError` that says which field was wrong and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol.errors import FieldError


def expect_map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FieldError(f"{what} must be a map")
    return value


def only_keys(m: Mapping[str, Any], allowed: set[str] | frozenset[str], what: str) -> None:
    extra = sorted(set(m) - set(allowed))
    if extra:
        raise FieldError(f"{what} has unknown field(s): {', '.join(extra)}")


def req_int(m: Mapping[str, Any], key: str, *, lo: int | None = None, hi: int | None = None) -> int:
    if key not in m:
        raise FieldError(f"missing field '{key}'")
    v = m[key]
    if not isinstance(v, int) or isinstance(v, bool):
        raise FieldError(f"field '{key}' must be an integer")
    if lo is not None and v < lo:
        raise FieldError(f"field '{key}' must be >= {lo}")
    if hi is not None and v > hi:
        raise FieldError(f"field '{key}' must be <= {hi}")
    return v



def req_bytes(m: Mapping[str, Any], key: str, *, size: int | None = None, max_size: int | None = None) -> bytes:
    if key not in m:
        raise FieldError(f"missing field '{key}'")
    v = m[key]
    if not isinstance(v, bytes):
        raise FieldError(f"field '{key}' must be bytes")
    if size is not None and len(v) != size:
        raise FieldError(f"field '{key}' must be {size} bytes")
    if max_size is not None and len(v) > max_size:
        raise FieldError(f"field '{key}' must be at most {max_size} bytes")
    return v



def req_str(m: Mapping[str, Any], key: str, *, max_len: int = 256, min_len: int = 0) -> str:
    if key not in m:
        raise FieldError(f"missing field '{key}'")
    v = m[key]
    if not isinstance(v, str):
        raise FieldError(f"field '{key}' must be a string")
    if len(v) > max_len or len(v) < min_len:
        raise FieldError(f"field '{key}' must be {min_len}..{max_len} characters")
    return v




def req_list(m: Mapping[str, Any], key: str, *, max_len: int) -> list[Any]:
    if key not in m:
        raise FieldError(f"missing field '{key}'")
    v = m[key]
    if not isinstance(v, list):
        raise FieldError(f"field '{key}' must be a list")
    if len(v) > max_len:
        raise FieldError(f"field '{key}' has more than {max_len} items")
    return v
