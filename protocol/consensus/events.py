"""What goes into `Replica.handle` (events) and what comes out (actions).

Rule: the driver executes a returned action list strictly in order; a `Persist` is durable (fsynced)
before the next action runs (the Persists of a run of Persist/Send/Broadcast actions may share one fsync
that precedes the run's messages: they only leave later), and a `CommitBlock` is durable in the block store before the next action runs.
Everything the driver must answer is answered by feeding an event back (`BuildBlock` -> `BlockBuilt`,
`ValidateBlock` -> `BlockValidated`, `CommitBlock` -> `BlockExecuted`, `NeedSync` -> `SyncedTo`).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.block import Block
from protocol.consensus.certs import CheckpointCertificate, CommitCertificate
from protocol.consensus.messages import Message, SignedMessage
from protocol.consensus.wal import WalMeta, WalRecord

# Timer kinds. A replica keeps at most one timer of each kind; a fire whose token is not the latest
# one set for that kind is ignored, so the driver never needs to cancel precisely.
TIMER_VIEW = "view"          # work pending (or a view change running) without a commit
TIMER_BATCH = "batch"        # a partial block waits out the batch interval (batch_timeout_ms > 0 only)
TIMER_RETRANSMIT = "retransmit"  # re-send own messages of an unfinished round


# ---------------------------------------------------------------- events (driver -> replica)

@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A decoded consensus message; `sender` is the authenticated peer key it came from."""

    sender: bytes
    msg: Message


@dataclass(frozen=True, slots=True)
class TimerFired:
    kind: str
    token: int


@dataclass(frozen=True, slots=True)
class WorkPending:
    """The mempool's current READY totals (txs that can execute next; not a delta, and never txs waiting
    behind a nonce gap). Feed it when they change and after every CommitBlock/SyncedTo, also when zero:
    the primary proposes only while it is above zero, so an idle chain makes no blocks."""

    txs: int
    bytes: int


@dataclass(frozen=True, slots=True)
class BlockBuilt:
    """Answer to BuildBlock: the block the driver built for (height, view, parent), or None when it had
    nothing to put in one (the ready work went away meanwhile): then no block is proposed."""

    block: Block | None


@dataclass(frozen=True, slots=True)
class BlockValidated:
    """Answer to ValidateBlock: tx signatures, timestamp bounds, state_root, parent state checked."""

    block_hash: bytes
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BlockExecuted:
    """The driver finished executing committed block `height` (in height order, possibly while later
    heights are agreed on); `state_root` is the state after it. Lets the primary build height + 2 (whose
    header carries that root) and validators sign the checkpoint at multiples of K."""

    height: int
    block_hash: bytes
    state_root: bytes


@dataclass(frozen=True, slots=True)
class SyncedTo:
    """The driver fetched, verified, stored and executed blocks up to `height` by block sync."""

    height: int
    block_hash: bytes
    cert: CommitCertificate
    state_root: bytes


Event = MessageReceived | TimerFired | WorkPending | BlockBuilt | BlockValidated | BlockExecuted | SyncedTo


# ---------------------------------------------------------------- actions (replica -> driver)

@dataclass(frozen=True, slots=True)
class Send:
    to: bytes
    msg: Message


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send to every validator (and observers) except ourselves."""

    msg: Message


@dataclass(frozen=True, slots=True)
class Persist:
    """Append `record` to the consensus WAL and fsync it before executing the next action. `meta` lets
    the driver compact the WAL (`wal.compact_plan`) without decoding records again."""

    record: bytes
    meta: WalMeta

    @classmethod
    def of(cls, rec: WalRecord) -> Persist:
        return cls(rec.encode(), rec.meta)


@dataclass(frozen=True, slots=True)
class CommitBlock:
    """Block `block` is decided; store it with `certificate` durably before the next action and feed a
    fresh WorkPending; execute it (in height order, it may run while the next height is agreed on), then
    feed BlockExecuted(height, hash, state_root)."""

    block: Block
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class SetTimer:
    kind: str
    token: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    kind: str


@dataclass(frozen=True, slots=True)
class BuildBlock:
    """Take up to max_txs / max_bytes from the mempool, choose time and state_root (after block
    `state_root_height(height)`, which the replica made sure is executed),
    build `protocol.block.Block` with proposer = own key and this height/view/parent, feed BlockBuilt."""

    height: int
    view: int
    parent: bytes
    max_txs: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class ValidateBlock:
    """Check everything the replica does not (tx signatures, timestamps, state_root against the state
    after block `state_root_height(height)`, which the replica made sure is executed); feed
    BlockValidated."""

    block: Block


@dataclass(frozen=True, slots=True)
class NeedSync:
    """A quorum-backed proof shows blocks up to `target_height` are committed; fetch them with their
    commit certificates from `peers` (validator keys that signed it), verify, execute, feed SyncedTo."""

    target_height: int
    peers: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StableCheckpoint:
    """n - f validators agree on (height, block_hash, state_root): keep a snapshot there; WAL records
    and certificates below it are no longer needed by consensus."""

    height: int
    block_hash: bytes
    state_root: bytes
    certificate: CheckpointCertificate


@dataclass(frozen=True, slots=True)
class Evidence:
    """Validator `index` signed two conflicting messages (same kind, view, height; different content)."""

    index: int
    first: SignedMessage
    second: SignedMessage


Action = (Send | Broadcast | Persist | CommitBlock | SetTimer | CancelTimer | BuildBlock | ValidateBlock | NeedSync
          | StableCheckpoint | Evidence)
