"""The node's HTTP API (aiohttp): JSON/msgpack endpoints, /metrics, OpenAPI and the web status page."""
