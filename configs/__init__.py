"""The operator files shipped with smeledger (package data, so an installed wheel has them too):
`node.example.toml` (every setting and its default), `systemd/smeledger.service` (the hardened unit),
`prometheus/prometheus.yml` and `prometheus/alerts.yml`, and `testnet.md`.

Rule: read-only data; `smeledger init` finds them here with `path()` rather than guessing a checkout.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

EXAMPLE_CONFIG = "node.example.toml"
SYSTEMD_UNIT = "systemd/smeledger.service"
PROMETHEUS = "prometheus/prometheus.yml"
ALERTS = "prometheus/alerts.yml"


def path(name: str) -> Path:
    """The file's location on disk (inside the installed package or the checkout)."""
    p = Path(str(resources.files(__name__).joinpath(name)))
    if not p.is_file():
        raise FileNotFoundError(f"smeledger package data {name} is missing (reinstall smeledger)")
    return p


def read(name: str) -> str:
    return path(name).read_text(encoding="utf-8")
