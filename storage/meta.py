"""Node-home identity: which chain (chain id + genesis hash) this database belongs to.

Rule: a database is bound to one chain on first use and refuses any other: opening a node home with a
different genesis fails with `GenesisMismatch` (code `genesis_mismatch`) before anything is written.
"""

from __future__ import annotations

from storage import schema
from storage.db import Database
from storage.errors import DatabaseCorrupt, GenesisMismatch


class ChainMeta:
    """Chain id, genesis hash and schema version of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def chain_id(self) -> str | None:
        raw = self.db.get(schema.META_CHAIN_ID)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DatabaseCorrupt("stored chain id is not UTF-8") from None

    def genesis_hash(self) -> bytes | None:
        return self.db.get(schema.META_GENESIS_HASH)

    def bind(self, chain_id: str, genesis_hash: bytes) -> bool:
        """Bind an empty database to this chain, or check it is already bound to it.

        Returns True when it was bound just now (first start), False when it already matched.
        """
        stored_chain = self.chain_id()
        stored_hash = self.genesis_hash()
        version = self.db.get(schema.META_SCHEMA_VERSION)
        if version is not None and schema.read_u64(version) != schema.SCHEMA_VERSION:
            raise DatabaseCorrupt(f"database schema version {schema.read_u64(version)} is not "
                                  f"{schema.SCHEMA_VERSION}")
        if stored_chain is None and stored_hash is None:
            with self.db.batch(sync=True) as b:
                b.put(schema.META_CHAIN_ID, chain_id.encode("utf-8"))
                b.put(schema.META_GENESIS_HASH, genesis_hash)
                b.put(schema.META_SCHEMA_VERSION, schema.u64(schema.SCHEMA_VERSION))
            return True
        if stored_chain != chain_id or stored_hash != genesis_hash:
            raise GenesisMismatch(
                f"this node home belongs to chain {stored_chain!r} with genesis "
                f"{(stored_hash or b'').hex()[:16]}..., not {chain_id!r} with genesis {genesis_hash.hex()[:16]}...; "
                "use a fresh home or the matching genesis")
        return False
