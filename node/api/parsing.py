"""Request parsing with the API's models (`protocol.api`): path and query parameters and JSON bodies become
typed structs, checked against the same bounds and patterns the OpenAPI document states (it is generated
from these models), and answers are encoded from structs.

Rule: a parameter that does not fit its model is a 400 with a stable code (`bad_<parameter>`, or the
code the API has always used for it: `bad_hash`, `bad_height`, ...) that names the parameter; integers
are ASCII digits only (never `+5`, `1_000` or a superscript digit); unknown query parameters are ignored.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from node.errors import ApiError
from protocol import api

T = TypeVar("T")
_CODES = {"hash": "bad_hash", "tx_hash": "bad_hash", "height": "bad_height", "before": "bad_height",
          "id": "bad_field", "account": "bad_field", "kind": "bad_field", "proof": "bad_field",
          "offset_ms": "bad_field"}
_FIELD_PROBLEM = re.compile(r"(missing required field|unknown field) `([A-Za-z_]+)`")
_AT = re.compile(r"at `\$\.([A-Za-z_]+)[^`]*`")
_MAX_INT_DIGITS = 19


def code_of(field: str) -> str:
    return _CODES.get(field, f"bad_{field}")


def _wants_int(tp: Any) -> bool:
    """True for `int`, `Annotated[int, ...]` and optionals of them."""
    if tp is int:
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _wants_int(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_wants_int(a) for a in typing.get_args(tp) if a is not type(None))
    return False


def _failed(exc: msgspec.ValidationError, what: str, default_field: str) -> ApiError:
    m = _AT.search(str(exc))
    field = m.group(1) if m else default_field
    text = _AT.sub("", str(exc)).rstrip(" -")
    return ApiError(f"{what} {field}: {text}", code=code_of(field))


def params(source: Mapping[str, str], model: type[T], what: str) -> T:
    """`source` (a match_info or a query) as `model`; ApiError(bad_<field>) when a value does not fit."""
    raw: dict[str, Any] = {}
    for f in msgspec.structs.fields(model):  # type: ignore[arg-type]
        if f.name not in source:
            continue
        text = source[f.name]
        if _wants_int(f.type):
            if not (text.isascii() and text.isdigit()) or len(text) > _MAX_INT_DIGITS:
                raise ApiError(f"{what} {f.name} must be a non-negative integer in ASCII digits", code=code_of(f.name))
            raw[f.name] = int(text)
        else:
            raw[f.name] = text
    try:
        return msgspec.convert(raw, type=model)
    except msgspec.ValidationError as exc:
        raise _failed(exc, what, "parameter") from None


def path(request: web.Request, model: type[T]) -> T:
    return params(request.match_info, model, "path parameter")


def query(request: web.Request, model: type[T]) -> T:
    return params(request.query, model, "query parameter")


def body(doc: Any, model: type[T], *, shape: str) -> T:
    """A decoded JSON body (from `bodies.loads_json`, which bounds the work) as `model`: `bad_<field>` when
    a field is out of bounds or missing, `bad_json` when it is not an object of that shape."""
    try:
        return msgspec.convert(_integral(doc, model), type=model)
    except msgspec.ValidationError as exc:
        m = _AT.search(str(exc))
        if m is not None:
            raise _failed(exc, "body field", m.group(1)) from None
        f = _FIELD_PROBLEM.search(str(exc))
        if f is not None:
            raise ApiError(f"body field {f.group(2)}: {f.group(1)} (expected {shape})", code=code_of(f.group(2))) from None
        raise ApiError(f"JSON body must be {shape}: {exc}", code="bad_json") from None


def _integral(doc: Any, model: type) -> Any:
    """JSON has one number type: `5.0` is the integer 5 to JSON Schema (and to the generated document), so
    an integral float in an integer field is taken as that integer; `5.5` or `"5"` still fail."""
    if not isinstance(doc, dict):
        return doc
    ints = {f.name for f in msgspec.structs.fields(model) if _wants_int(f.type)}  # type: ignore[arg-type]
    return {k: int(v) if k in ints and isinstance(v, float) and v.is_integer() else v for k, v in doc.items()}


def answer(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON answer encoded from a struct of `protocol.api` (or a dict already checked with `conform`)."""
    return web.Response(body=api.encode(doc), status=status, content_type="application/json",
                        headers=dict(headers) if headers else None)
