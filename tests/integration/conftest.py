"""The `net` fixture: a fresh 4-validator + 1-observer testnet in a tmp dir, closed (every process stopped)
even when the test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Net


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path / "tn")
    try:
        yield n
    finally:
        n.close()
