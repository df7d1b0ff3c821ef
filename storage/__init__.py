"""smeledger storage layer: LevelDB through plyvel. No asyncio, no networking; never imports `node`."""
