"""Block sync and snapshot state sync (DESIGN §2): `SyncService(env, handover, ...)`.

See `node/sync/service.py` for the driver contract, `serve.py` for the serving side, `blocks.py` and
`statesync.py` for fetching, and `protocol/syncmsg.py` for the wire bodies.
"""

from node.sync.common import SnapshotPlan, SyncEnv, SyncSettings
from node.sync.service import SyncService

__all__ = ["SnapshotPlan", "SyncEnv", "SyncService", "SyncSettings"]
