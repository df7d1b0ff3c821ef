"""Sans-I/O PBFT consensus: `Replica.handle(event, now_ms) -> list[Action]`.

The replica never awaits, never reads a clock, never touches disk or sockets; a driver (node/consensus.py
in production, tests/sim in the simulator) owns it and executes what it returns.

Construction::

    Replica(chain_id, validators, key, params, committed_height, committed_hash, records,
            committed_cert=None)

- `validators`: Ed25519 public keys fixed by genesis; index = position; primary of view v = v mod n.
- `key`: this node's `PrivateKey`, or None for an observer (follows commits, never signs).
- `committed_height/committed_hash/committed_cert`: the last block in the block store and its commit
  certificate (height 0 = nothing committed yet, hash = the genesis parent, cert None).
- `records`: the WAL records persisted so far (see `wal.compact_records` to shrink them).

Driver contract (binding):
1. Execute each returned action list strictly in order, before feeding the next event.
2. `Persist(record)`: append and fsync before executing the next action (write-ahead: the matching
   Send/Broadcast follows it). The Persists of a run of Persist/Send/Broadcast actions may be made
   durable in one fsync before the run's messages go out in order: that only delays messages.
3. `CommitBlock(block, certificate)`: store block + certificate durably (one write batch) before the next
   action and feed a fresh `WorkPending(txs, bytes)` (also when zero); execute it in height order, off the
   round (the next height is agreed on meanwhile: block h carries the state root after h - 2), then feed
   `BlockExecuted(height, hash, state_root)`.
4. `BuildBlock(...)` -> `BlockBuilt(block)`; `ValidateBlock(block)` -> `BlockValidated(hash, ok, reason)`
   (the replica asks only after the parent was executed); `NeedSync(target, peers)` -> fetch blocks with
   certificates, verify them (`CommitCertificate.verify`), store and execute, then `SyncedTo(...)`.
5. `SetTimer(kind, token, delay_ms)` replaces the previous timer of that kind; when it fires feed
   `TimerFired(kind, token)`. `CancelTimer(kind)` may be ignored (stale tokens are ignored).
6. `Broadcast(msg)` goes to all validators and observers; `Send(to, msg)` to one peer. Incoming bytes are
   decoded with `codec.decode` and `decode_message(value)` and fed as `MessageReceived(peer_key, msg)`.
7. `StableCheckpoint(...)`: keep a state snapshot at that height; WAL records may be compacted with
   `compact_records(records, committed_height)` at any time.
8. `Evidence(...)`: log/store it (bounded); consensus already ignores the second message.
"""

from protocol.consensus.certs import (
    CheckpointCertificate,
    CommitCertificate,
    PreparedCertificate,
    checkpoint_bytes,
    vote_bytes,
)
from protocol.consensus.events import (
    TIMER_BATCH,
    TIMER_RETRANSMIT,
    TIMER_VIEW,
    Action,
    BlockBuilt,
    BlockExecuted,
    BlockValidated,
    Broadcast,
    BuildBlock,
    CancelTimer,
    CommitBlock,
    Event,
    Evidence,
    MessageReceived,
    NeedSync,
    Persist,
    Send,
    SetTimer,
    StableCheckpoint,
    SyncedTo,
    TimerFired,
    ValidateBlock,
    WorkPending,
)
from protocol.consensus.messages import (
    Checkpoint,
    Commit,
    CommitProof,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    SignedMessage,
    Suspect,
    ViewChange,
    ViewQuery,
    decode_message,
    encode_message,
)
from protocol.consensus.params import ConsensusParams, max_faulty, quorum
from protocol.consensus.replica import Replica
from protocol.consensus.wal import WalMeta, WalRecord, compact_plan, compact_records, decode_record

__all__ = [
    "TIMER_BATCH", "TIMER_RETRANSMIT", "TIMER_VIEW", "Action", "BlockBuilt", "BlockExecuted", "BlockValidated",
    "Broadcast", "BuildBlock", "CancelTimer", "Checkpoint", "CheckpointCertificate", "Commit", "CommitBlock",
    "CommitCertificate", "CommitProof", "ConsensusParams", "Event", "Evidence", "Message", "MessageReceived",
    "NeedSync", "NewView", "Persist", "PrePrepare", "Prepare", "PreparedCertificate", "Replica", "Send",
    "SetTimer", "SignedMessage", "StableCheckpoint", "Suspect", "SyncedTo", "TimerFired", "ValidateBlock", "ViewChange",
    "ViewQuery",
    "WalMeta", "WalRecord", "WorkPending", "checkpoint_bytes", "compact_plan", "compact_records", "decode_message", "decode_record",
    "encode_message", "max_faulty", "quorum", "vote_bytes",
]
