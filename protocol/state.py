"""The state-view interface the ledger runs against, an in-memory store, and a write overlay.

Rule: the ledger reads and writes state only through `StateView`. `Overlay` buffers writes over any
read-only base (a LevelDB snapshot in the node, a dict in tests), supports nested savepoints so one
failed transaction can be reverted, and yields the final change set for one atomic commit. Keys and
values are bytes; iteration is always in ascending key order, so execution is deterministic.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Protocol


class StateReader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def iter_range(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Ascending (key, value) pairs with start <= key < stop."""
        ...


class StateView(StateReader, Protocol):
    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def savepoint(self) -> int: ...

    def revert(self, token: int) -> None: ...

    def release(self, token: int) -> None: ...


class MemoryState:
    """A sorted in-memory key/value store: the base in tests and the simulator."""

    def __init__(self, items: dict[bytes, bytes] | None = None) -> None:
        self._data: dict[bytes, bytes] = dict(items or {})
        self._keys: list[bytes] = sorted(self._data)

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def iter_range(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        i = bisect.bisect_left(self._keys, start)
        keys = self._keys
        while i < len(keys) and keys[i] < stop:
            k = keys[i]
            yield k, self._data[k]
            i += 1

    def apply(self, changes: dict[bytes, bytes | None]) -> None:
        for k, v in changes.items():
            if v is None:
                if k in self._data:
                    del self._data[k]
                    self._keys.pop(bisect.bisect_left(self._keys, k))
            else:
                if k not in self._data:
                    bisect.insort(self._keys, k)
                self._data[k] = v

    def items(self) -> list[tuple[bytes, bytes]]:
        return [(k, self._data[k]) for k in self._keys]

    def __len__(self) -> int:
        return len(self._data)


_MISSING = object()


class Overlay:
    """Buffered writes over a read-only base, with nested savepoints.

    Point reads of the base are remembered for the overlay's life (one block): a block touches a few
    keys per tx, mostly the same ones again (sender records, assets, balances), and the base must not
    change under an overlay anyway. So the memo is bounded by what one block reads."""

    def __init__(self, base: StateReader) -> None:
        self._base = base
        self._writes: dict[bytes, bytes | None] = {}
        self._reads: dict[bytes, bytes | None] = {}
        self._undo: list[list[tuple[bytes, object]]] = []

    def get(self, key: bytes) -> bytes | None:
        w = self._writes
        if key in w:
            return w[key]
        r = self._reads
        if key in r:
            return r[key]
        v = r[key] = self._base.get(key)
        return v

    def _record(self, key: bytes) -> None:
        if self._undo:
            self._undo[-1].append((key, self._writes.get(key, _MISSING)))

    def put(self, key: bytes, value: bytes) -> None:
        self._record(key)
        self._writes[key] = value

    def delete(self, key: bytes) -> None:
        self._record(key)
        self._writes[key] = None

    def savepoint(self) -> int:
        self._undo.append([])
        return len(self._undo)

    def revert(self, token: int) -> None:
        while len(self._undo) >= token:
            for key, old in reversed(self._undo.pop()):
                if old is _MISSING:
                    self._writes.pop(key, None)
                else:
                    self._writes[key] = old  # type: ignore[assignment]

    def release(self, token: int) -> None:
        """Keep the writes made since the savepoint, folding its undo log into the enclosing one."""
        while len(self._undo) >= token:
            log = self._undo.pop()
            if self._undo:
                self._undo[-1].extend(log)

    def iter_range(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Merge the base range with buffered writes, ascending, skipping deletions."""
        local = sorted(k for k in self._writes if start <= k < stop)
        base = self._base.iter_range(start, stop)
        li = 0
        nxt = next(base, None)
        while nxt is not None or li < len(local):
            if li < len(local) and (nxt is None or local[li] <= nxt[0]):
                k = local[li]
                li += 1
                if nxt is not None and nxt[0] == k:
                    nxt = next(base, None)
                v = self._writes[k]
                if v is not None:
                    yield k, v
            else:
                assert nxt is not None
                yield nxt
                nxt = next(base, None)

    def changes(self) -> dict[bytes, bytes | None]:
        """The net change set (None = delete), in ascending key order."""
        return {k: self._writes[k] for k in sorted(self._writes)}
