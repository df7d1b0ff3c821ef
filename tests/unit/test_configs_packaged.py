"""The operator files ship as package data (so an installed smeledger finds them), and the Prometheus
scrape config adds no label that the node's own samples already carry."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

import configs

ROOT = Path(__file__).resolve().parents[2]


def test_every_file_under_configs_is_declared_package_data_and_found_by_name() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["configs"]
    files = [p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*")
             if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert files and all(any(f.match(pat) for pat in patterns) for f in files), (files, patterns)
    for name in (configs.EXAMPLE_CONFIG, configs.SYSTEMD_UNIT, configs.PROMETHEUS, configs.ALERTS):
        assert configs.path(name).is_file() and configs.read(name)


def test_the_scrape_config_adds_no_label_the_samples_carry() -> None:
    doc = yaml.safe_load(configs.read(configs.PROMETHEUS))
    labels = {k for job in doc["scrape_configs"] for sc in job["static_configs"] for k in sc.get("labels", {})}
    assert not labels & {"node", "chain_id"}, labels
