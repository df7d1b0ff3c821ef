"""The chaos schedule: a seed becomes a sequence of fault episodes, the same sequence every time.

An episode applies one fault (sometimes with degraded links on top), holds it for `hold_s`, heals it,
waits until the network has recovered, then leaves `gap_s` of calm before the next. The plan fixes the
order, kinds, targets, holds and parameters; only the wall-clock times depend on how long recoveries take,
so `--seed S` replays the same schedule. The first episodes cover every kind once (in a seeded order), so
a run of a few minutes already meets each of them; later ones are drawn by weight.

Kinds (targets are node names, or `primary`, resolved when the fault is applied):
- `kill`: kill -9, restarted after the hold; `kill2`: two validators at once (the chain must stall safely),
  the second restarted `stagger_s` after the first;
- `pause`: SIGSTOP, SIGCONT after the hold;
- `isolate`: one node cut off from everyone; `split`: validators 2-2 (the observer with the first side);
  `oneway`: one node's outgoing (`out`) or incoming (`in`) bytes black-holed, the other direction intact;
- `links`: delay, jitter, bandwidth, loss (as retransmission stalls) and reordering on some peer links;
- `clock_skew`: one validator restarted with its consensus clock shifted by `skew_ms`;
- `byzantine`: the run's byzantine validator restarted in `mode` (equivocate, silent, flood, garbage),
  then honest again.

Rule: pure: no I/O, no clock; every draw comes from `random.Random(seed)`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

KINDS = ("kill", "kill2", "pause", "isolate", "split", "oneway", "links", "clock_skew", "byzantine")
WEIGHTS = {"kill": 3, "kill2": 1, "pause": 2, "isolate": 2, "split": 2, "oneway": 2, "links": 2,
           "clock_skew": 1, "byzantine": 3}
BYZANTINE_MODES = ("equivocate", "silent", "flood", "garbage")
PRIMARY = "primary"
WARMUP_S = 5.0


@dataclass(frozen=True)
class Fault:
    kind: str
    targets: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Episode:
    fault: Fault
    hold_s: float
    gap_s: float
    links: Fault | None = None  # degraded links on top of the main fault


@dataclass(frozen=True)
class Plan:
    seed: int
    duration_s: float
    byzantine: str  # the validator that misbehaves in `byzantine` episodes
    base_links: dict[str, Any]  # delay/jitter on every link for the whole run ({} = clean)
    episodes: tuple[Episode, ...]


def _link_faults(rng: random.Random, links: list[str], severe: bool) -> Fault:
    chosen = sorted(rng.sample(links, rng.randint(1, max(1, len(links) // 3))))
    params: dict[str, Any] = {"delay_ms": rng.randint(10, 250), "jitter_ms": rng.randint(0, 80)}
    if rng.random() < 0.5:
        params["loss"] = round(rng.uniform(0.01, 0.15 if severe else 0.05), 3)
    if rng.random() < 0.3:
        params["kbps"] = rng.choice([64, 256, 1024])
    if severe and rng.random() < 0.4:
        params["reorder"] = round(rng.uniform(0.001, 0.02), 4)
    return Fault("links", tuple(chosen), params)


def _fault(kind: str, rng: random.Random, validators: list[str], nodes: list[str], links: list[str],
           byzantine: str, modes: list[str]) -> Fault:
    def someone(pool: list[str]) -> str:
        return PRIMARY if rng.random() < 0.4 else rng.choice(pool)

    if kind in ("kill", "pause", "isolate"):
        return Fault(kind, (someone(nodes),))
    if kind == "kill2":
        a, b = rng.sample(validators, 2)
        first = PRIMARY if rng.random() < 0.5 else a
        return Fault(kind, (first, b if b != first else a), {"stagger_s": round(rng.uniform(1, 5), 1)})
    if kind == "split":
        order = rng.sample(validators, len(validators))
        half = len(order) // 2
        side_a = tuple(sorted(order[:half] + [n for n in nodes if n not in validators]))
        return Fault(kind, (*side_a, "|", *sorted(order[half:])))
    if kind == "oneway":
        return Fault(kind, (someone(nodes),), {"direction": rng.choice(["in", "out"])})
    if kind == "links":
        return _link_faults(rng, links, severe=True)
    if kind == "clock_skew":
        skew = rng.randint(2_000, 20_000) * rng.choice([-1, 1])
        return Fault(kind, (rng.choice(validators),), {"skew_ms": skew})
    if kind == "byzantine":
        mode = modes.pop(0) if modes else rng.choice(BYZANTINE_MODES)
        return Fault(kind, (byzantine,), {"mode": mode})
    raise ValueError(f"unknown fault kind {kind!r}")


def plan(seed: int, duration_s: float, validators: list[str], observers: list[str]) -> Plan:
    rng = random.Random(seed)
    nodes = [*validators, *observers]
    links = [f"{a}->{b}" for a in nodes for b in nodes if a != b]
    byzantine = rng.choice(validators)
    base: dict[str, Any] = {}
    if rng.random() < 0.5:
        base = {"delay_ms": rng.randint(1, 20), "jitter_ms": rng.randint(0, 10)}
    modes = rng.sample(BYZANTINE_MODES, len(BYZANTINE_MODES))
    first = rng.sample(KINDS, len(KINDS))
    episodes: list[Episode] = []
    t = WARMUP_S
    kinds, weights = list(WEIGHTS), [WEIGHTS[k] for k in WEIGHTS]
    while t < duration_s:
        kind = first.pop(0) if first else rng.choices(kinds, weights)[0]
        hold = round(rng.uniform(3, 12), 1)
        if kind == "byzantine":
            hold = round(rng.uniform(10, 25), 1)
        fault = _fault(kind, rng, validators, nodes, links, byzantine, modes)
        overlay = _link_faults(rng, links, severe=False) if kind != "links" and rng.random() < 0.3 else None
        gap = round(rng.uniform(2, 5), 1)
        episodes.append(Episode(fault, hold, gap, overlay))
        t += hold + gap + 3  # about 3 s to recover, for planning only
    return Plan(seed, duration_s, byzantine, base, tuple(episodes))
