"""Scenarios and the one entry point `run_seed(seed, scenario, n) -> Result`.

A run: a fault phase of 1.5-3.5 virtual seconds with client load and the scenario's faults, then the network
heals (byzantine replicas stay byzantine), probe transactions go to every node, and the run ends when
every honest node committed them or the liveness bound passes. Then safety, certificates and the memory
bound are checked. Rule: everything derives from `seed`; the trace hash identifies the run byte for byte.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from tests.sim.byzantine import BEHAVIOURS
from tests.sim.net import SIM_PARAMS, Faults, Sim

SCENARIOS = ("normal", "lossy", "partition", "crash", "skew", "silent", "equivocate", "twins", "badsig",
             "flood", "mixed", "pipeline")
LIVENESS_MS = 40_000  # after the faults stop, every honest node commits the probes within this


@dataclass
class Result:
    seed: int
    scenario: str
    n: int
    trace: str = ""
    safety: list[str] = field(default_factory=list)
    liveness: str | None = None
    memory: list[str] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    recovery_ms: int = 0
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.safety and self.liveness is None and not self.memory

    def replay_command(self) -> str:
        return f".venv/bin/python -m tests.sim.replay --seed {self.seed} --scenario {self.scenario} --n {self.n}"

    def describe(self) -> str:
        lines = [f"seed={self.seed} scenario={self.scenario} n={self.n} trace={self.trace[:16]}"]
        lines += [f"  SAFETY: {s}" for s in self.safety]
        if self.liveness:
            lines.append(f"  LIVENESS: {self.liveness}")
        lines += [f"  MEMORY: {m}" for m in self.memory]
        lines.append(f"  replay: {self.replay_command()}")
        return "\n".join(lines)


def _partitions(rng: random.Random, n_nodes: int, fault_ms: int) -> list[tuple[int, int, list[int]]]:
    out = []
    for _ in range(rng.randint(1, 3)):
        start = rng.randrange(0, fault_ms - 300)
        end = min(fault_ms, start + rng.randint(300, 2000))
        side = sorted(rng.sample(range(n_nodes), rng.randint(1, n_nodes - 1)))
        out.append((start, end, side))
    return out


def _crashes(rng: random.Random, candidates: list[int], fault_ms: int) -> list[tuple[int, int, int]]:
    out = []
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(0, fault_ms - 200)
        out.append((at, min(fault_ms, at + rng.randint(100, 1500)), rng.choice(candidates)))
    return out


def _primary_crashes(rng: random.Random, n: int, fault_ms: int) -> list[tuple[int, int, int]]:
    """Crashes of the primaries of views 0, 1, 2, ... in turn, while blocks are still executing: each
    forces a view change with one height being agreed on and the one before it not executed yet."""
    out = []
    at = rng.randrange(50, 400)
    for view in range(rng.randint(1, 3)):
        if at >= fault_ms - 100:
            break
        out.append((at, min(fault_ms, at + rng.randint(100, 1200)), view % n))
        at += rng.randint(200, 900)
    return out


def build(seed: int, scenario: str, n: int) -> tuple[Sim, int]:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    rng = random.Random(f"{scenario}/{n}/{seed}")
    fault_ms = rng.randint(1_500, 3_500)
    faults = Faults(until_ms=fault_ms)
    observers = 1 if scenario in ("normal", "partition") else 0
    # most runs propose as soon as a height opens (the default); a quarter wait for a fuller block
    batch_ms = random.Random(f"batch/{scenario}/{n}/{seed}").choice((0, 0, 0, 20))
    sim = Sim(seed, n, faults, replace(SIM_PARAMS, batch_timeout_ms=batch_ms), observers=observers)
    byz = scenario if scenario in ("silent", "equivocate", "twins", "badsig", "flood") else None
    network = scenario
    if scenario == "mixed":
        byz = rng.choice(["silent", "equivocate", "twins", "badsig", "flood", None])
        network = rng.choice(["lossy", "partition", "crash", "skew", "all"])
    bad = 0 if byz == "equivocate" or rng.random() < 0.4 else rng.randrange(n)
    if byz == "twins":
        sim.add_twin(bad)
    elif byz is not None:
        sim.nodes[bad].honest = False
        sim.nodes[bad].behaviour = byz
        sim.byz[bad] = BEHAVIOURS[byz]()
    honest = [node.id for node in sim.nodes if node.honest]
    if network in ("lossy", "all"):
        faults.loss = rng.uniform(0.0, 0.3)
        faults.dup = rng.uniform(0.0, 0.2)
        faults.jitter = rng.randint(0, 60)
        faults.delay = (1, rng.randint(5, 40))
    if network in ("partition", "all") or (byz == "twins" and rng.random() < 0.5):
        faults.partitions = _partitions(rng, len(sim.nodes), fault_ms)
    if network in ("crash", "all"):
        faults.crashes = _crashes(rng, honest, fault_ms)
    if scenario == "pipeline" or (scenario == "mixed" and rng.random() < 0.3):
        # execution slower than a round: several heights in flight when a primary or a replica crashes
        faults.execute = (rng.randint(1, 40), rng.randint(40, 250))
        faults.crashes = _primary_crashes(rng, n, fault_ms) + (_crashes(rng, honest, fault_ms)
                                                               if rng.random() < 0.5 else [])
        faults.loss = max(faults.loss, rng.uniform(0.0, 0.1))
    if network in ("skew", "all"):
        choices = [(1, 2), (2, 3), (1, 1), (3, 2), (2, 1)]
        faults.skew = {i: rng.choice(choices) for i in range(len(sim.nodes))}
        faults.loss = max(faults.loss, rng.uniform(0.0, 0.05))
    return sim, fault_ms


def run_seed(seed: int, scenario: str, n: int) -> Result:
    sim, fault_ms = build(seed, scenario, n)
    res = Result(seed, scenario, n)
    sim.start()
    load_rng = random.Random(f"load/{seed}")
    t = 0
    while t < fault_ms:
        t += load_rng.randint(30, 150)
        count = load_rng.randint(1, 12)
        sim.schedule(t, "call", 0, 0, lambda c=count: sim.submit(c, "tx"))
    sim.run_until(fault_ms + 20)
    probes = sim.submit(4, "probe")
    honest = [node for node in sim.nodes if node.honest]
    deadline = sim.now + LIVENESS_MS

    def done() -> bool:
        return all(all(p in node.committed_txs for p in probes) for node in honest)

    start = sim.now
    sim.run_until(deadline, stop=done)
    res.recovery_ms = sim.now - start
    if not done():
        late = [node.id for node in honest if not all(p in node.committed_txs for p in probes)]
        res.liveness = (f"honest nodes {late} did not commit the probes within {LIVENESS_MS} ms after the "
                        f"faults stopped (heights {[node.height for node in sim.nodes]})")
    if sim.storm:
        res.liveness = f"message storm: more than {sim.processed - 1} events by {sim.now} ms"
    check(sim, res)
    res.trace = sim.trace.hexdigest()
    return res


def check(sim: Sim, res: Result) -> None:
    honest = [node for node in sim.nodes if node.honest]
    res.heights = [node.height for node in sim.nodes]
    res.safety += sim.double_signed[:5]
    top = max((node.height for node in honest), default=0)
    for h in range(1, top + 1):
        hashes = sorted({node.blocks[h][0].hash for node in honest if h in node.blocks})
        if len(hashes) > 1:
            res.safety.append(f"height {h}: {len(hashes)} different blocks committed on honest nodes")
    for node in honest:
        for h in range(1, node.height + 1):
            block, cert = node.blocks[h]
            if cert.height != h or cert.block_hash != block.hash or not sim.verify_cert(cert):
                res.safety.append(f"node {node.id} height {h}: invalid commit certificate")
            prev = node.blocks[h - 1][0].hash if h > 1 else None
            if prev is not None and block.header.parent != prev:
                res.safety.append(f"node {node.id} height {h}: parent does not link")
        assert node.replica is not None
        bounds = node.replica.size_bounds()
        for k in sorted(node.max_sizes):
            if node.max_sizes[k] > bounds[k]:
                res.memory.append(f"node {node.id}: {k} reached {node.max_sizes[k]} > bound {bounds[k]}")
    stats: dict[str, int] = {}
    for node in honest:
        assert node.replica is not None
        for k, v in sorted(node.replica.stats.items()):
            stats[k] = stats.get(k, 0) + v
        stats["evidence"] = stats.get("evidence", 0) + node.evidence
    stats["stable_checkpoint"] = max((node.stable for node in honest), default=0)
    stats["overlapped"] = sim.overlapped
    res.stats = stats
