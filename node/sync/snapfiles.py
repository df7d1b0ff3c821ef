"""Stable-checkpoint snapshots on disk, so a restarted node serves one at once instead of only after its
next stable checkpoint.

Layout under the snapshot directory: one directory per snapshot, named by its height (20 digits), holding
`offer` (canonical msgpack: height, block hash, state root, the checkpoint certificate, the commit
certificate bytes of that block, the manifest bytes) and one file per chunk (`chunk-0000000`, ...), each
exactly the bytes a peer is served. A snapshot is written into `<name>.tmp/`, every file fsynced, then
renamed into place and the directory fsynced: a crash leaves a whole snapshot or a `.tmp` directory that
the next start deletes. At most `keep` snapshots and `max_bytes` bytes are kept together; the oldest go
first, the newest always stays, and one that alone exceeds `max_bytes` is not kept at all.

Loading checks each snapshot's offer (decodes strictly, certificates verify against the genesis
validators, the manifest names the same height and root, one file per chunk); every chunk read is checked
against the manifest's hash, so a damaged file is never served: it raises `SnapshotFileError` and the
caller drops that snapshot.

Rule: file I/O only, always called in a worker thread; nothing here touches the database.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.files import fsync_dir
from protocol import codec
from protocol.consensus.certs import CheckpointCertificate, CommitCertificate
from protocol.crypto import sha256
from protocol.errors import ProtocolError
from storage.snapshot import SnapshotManifest

OFFER = "offer"
TMP = ".tmp"
OFFER_LIMITS = codec.Limits(max_bytes=64 * 1024 * 1024, max_depth=6, max_str=64, max_bin=48 * 1024 * 1024,
                            max_array=4096, max_map=16)


class SnapshotFileError(Exception):
    """A snapshot on disk is unreadable or does not match its manifest."""


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True, slots=True)
class DiskSnapshot:
    """One snapshot on disk: its certified identity, manifest, and chunk files."""

    path: Path
    height: int
    block_hash: bytes
    root: bytes
    checkpoint: CheckpointCertificate
    commit: bytes
    manifest: SnapshotManifest
    manifest_bytes: bytes
    size: int

    def chunk(self, index: int) -> bytes | None:
        """Chunk `index` as served (None past the end); raises SnapshotFileError if the file is damaged."""
        hashes = self.manifest.chunk_hashes
        if not 0 <= index < len(hashes):
            return None
        try:
            data = (self.path / f"chunk-{index:07d}").read_bytes()
        except OSError as exc:
            raise SnapshotFileError(f"snapshot {self.height} chunk {index}: {exc.strerror or exc}") from None
        if sha256(data) != hashes[index]:
            raise SnapshotFileError(f"snapshot {self.height} chunk {index} does not match its manifest")
        return data


class SnapshotFiles:
    def __init__(self, directory: Path, *, keep: int, max_bytes: int, chain_id: str,
                 validators: Sequence[bytes]) -> None:
        self.dir = directory
        self.keep = keep
        self.max_bytes = max_bytes
        self.chain_id = chain_id
        self.validators = tuple(validators)

    # ---- writing -------------------------------------------------------------------------------------

    def write(self, height: int, block_hash: bytes, root: bytes, checkpoint: CheckpointCertificate, commit: bytes,
              chunks: Iterable[bytes], max_chunk_bytes: int) -> DiskSnapshot | None:
        """Write a snapshot from its chunks (in order), then enforce the bounds; the snapshot as kept, or None
        when no snapshot is kept at all (`keep` 0). Raises SnapshotFileError when it alone is larger than
        `max_bytes` or the disk refuses it (disk full, permissions); nothing of it is kept then."""
        if self.keep <= 0:
            return None
        final = self.dir / f"{height:020d}"
        tmp = self.dir / f"{height:020d}{TMP}"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            hashes: list[bytes] = []
            size = 0
            for index, data in enumerate(chunks):
                size += len(data)
                if size > self.max_bytes:
                    raise SnapshotFileError(f"snapshot {height} is larger than sync.snapshot_disk_bytes "
                                            f"({self.max_bytes})")
                _write_file(tmp / f"chunk-{index:07d}", data)
                hashes.append(sha256(data))
            manifest = SnapshotManifest(height, root, max_chunk_bytes, tuple(hashes))
            offer = codec.encode({"height": height, "block_hash": block_hash, "state_root": root,
                                  "checkpoint": checkpoint.to_value(), "commit": commit,
                                  "manifest": manifest.encode()})
            _write_file(tmp / OFFER, offer)
            fsync_dir(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            fsync_dir(self.dir)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SnapshotFileError(f"cannot write snapshot {height} to {self.dir}: {exc.strerror or exc}") from None
        except SnapshotFileError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        snap = DiskSnapshot(final, height, block_hash, root, checkpoint, commit, manifest, manifest.encode(),
                            size + len(offer))
        self.prune()
        return snap

    def prune(self) -> list[DiskSnapshot]:
        """Delete leftovers, broken snapshots and the oldest beyond the bounds; the kept ones, newest first."""
        found = self.load()
        kept: list[DiskSnapshot] = []
        total = 0
        for snap in found:  # newest first
            if len(kept) < self.keep and (not kept or total + snap.size <= self.max_bytes):
                kept.append(snap)
                total += snap.size
            else:
                shutil.rmtree(snap.path, ignore_errors=True)
        return kept

    def delete(self, snap: DiskSnapshot) -> None:
        shutil.rmtree(snap.path, ignore_errors=True)

    # ---- reading -------------------------------------------------------------------------------------

    def load(self) -> list[DiskSnapshot]:
        """Every valid snapshot on disk, newest first; `.tmp` leftovers and invalid ones are deleted."""
        if not self.dir.is_dir():
            return []
        out: list[DiskSnapshot] = []
        for entry in sorted(self.dir.iterdir(), reverse=True):
            if entry.name.endswith(TMP):
                shutil.rmtree(entry, ignore_errors=True)
                continue
            if not (entry.is_dir() and entry.name.isdigit() and len(entry.name) == 20):
                continue  # not ours: left alone
            snap = self._read(entry)
            if snap is None:
                shutil.rmtree(entry, ignore_errors=True)
            else:
                out.append(snap)
        return out

    def _read(self, path: Path) -> DiskSnapshot | None:
        try:
            raw = (path / OFFER).read_bytes()
            v: Any = codec.decode(raw, OFFER_LIMITS)
            if not isinstance(v, dict) or set(v) != {"height", "block_hash", "state_root", "checkpoint", "commit",
                                                      "manifest"}:
                return None
            height, block_hash, root, commit = v["height"], v["block_hash"], v["state_root"], v["commit"]
            cp = CheckpointCertificate.from_value(v["checkpoint"])
            cert = CommitCertificate.from_value(codec.decode(commit))
            manifest = SnapshotManifest.decode(v["manifest"])
            chunk_files = sorted(p for p in path.iterdir() if p.name.startswith("chunk-"))
            size = len(raw) + sum(p.stat().st_size for p in chunk_files)
        except (OSError, ProtocolError, TypeError):
            return None
        if (int(path.name) != height or cp.height != height or cp.block_hash != block_hash or cp.state_root != root
                or cert.height != height or cert.block_hash != block_hash or manifest.height != height
                or manifest.root != root or len(chunk_files) != len(manifest.chunk_hashes)
                or not cp.verify(self.validators, self.chain_id) or not cert.verify(self.validators, self.chain_id)):
            return None
        return DiskSnapshot(path, height, block_hash, root, cp, commit, manifest, v["manifest"], size)
