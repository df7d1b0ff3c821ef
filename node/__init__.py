"""smeledger node: the asyncio shell that owns every socket, file handle, timer and task."""
