"""Typed keys of the aiohttp application (shared by the server and the route modules)."""

from __future__ import annotations

from aiohttp import web

from node.context import NodeContext

CTX: web.AppKey[NodeContext] = web.AppKey("ctx", NodeContext)
