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
             "flood", "mixed", "pipeline", "viewlag", "slowlink")
LIVENESS_MS = 40_000  # after the faults stop, every honest node commits the probes within this
VIEW_CATCHUP_MS = 5_000  # viewlag: the restarted validator votes in the others' view within this of its restart
# (slowlink: the validator with slow links, within this of the links turning prompt again)


@dataclass
class Result:
    seed: int
    scenario: str
    n: int
    trace: str = ""
    safety: list[str] = field(default_factory=list)
    liveness: str | None = None
    memory: list[str] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)  # viewlag: what the restarted validator faced
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
    if scenario in ("viewlag", "slowlink"):
        fault_ms = rng.randint(4_000, 8_000)  # time for the others to go through several views
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
    if scenario == "viewlag":
        _view_lag(rng, sim, faults, fault_ms)
    if scenario == "slowlink":
        _slow_link(rng, sim, faults)
    if network in ("skew", "all"):
        choices = [(1, 2), (2, 3), (1, 1), (3, 2), (2, 1)]
        faults.skew = {i: rng.choice(choices) for i in range(len(sim.nodes))}
        faults.loss = max(faults.loss, rng.uniform(0.0, 0.05))
    return sim, fault_ms


def _view_lag(rng: random.Random, sim: Sim, faults: Faults, fault_ms: int) -> None:
    """One validator goes down early; while it is down, f of the others are cut off now and then, so the
    rest (below a quorum) time out through several views; it comes back (its WAL and blocks wiped when
    that is safe, see Sim._may_wipe) shortly before the faults stop, views behind the others."""
    f = (sim.n - 1) // 3
    lagger = rng.choice([i for i in range(1, sim.n)])
    down_at, back_at = rng.randint(50, 300), fault_ms - rng.randint(50, 300)
    faults.crashes = [(down_at, back_at, lagger)]
    others = [i for i in range(sim.n) if i != lagger]
    t = down_at + 100
    while t + 700 < back_at - 100:
        end = min(back_at - 100, t + rng.randint(600, 1_200))
        faults.partitions.append((t, end, sorted(rng.sample(others, f))))
        t = end + rng.randint(100, 300)
    if rng.random() < 0.5:
        faults.wipe = [lagger]
    sim.lagger = lagger


def _slow_link(rng: random.Random, sim: Sim, faults: Faults) -> None:
    """One validator's links (both ways) turn slow and jittery, around the view timeout: it hears the
    others, late, and its view timer runs out while theirs do not. It must not leave their view on its
    own (a view change needs a quorum that suspects the primary), and it votes in their view afterwards."""
    slow = rng.randrange(sim.n)
    t = sim.params.view_timeout_ms
    faults.slow = {slow: (t // 4, t + t // 2)}
    faults.jitter = rng.randint(0, t // 4)
    faults.loss = rng.choice((0.0, 0.0, rng.uniform(0.0, 0.05)))
    sim.lagger = slow


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
    elif scenario in ("viewlag", "slowlink"):
        res.liveness = _check_view_lag(sim, res, load_rng, fault_ms if scenario == "slowlink" else None)
    if res.liveness is None:
        res.liveness = _check_one_view(sim, load_rng)
    if sim.storm:
        res.liveness = f"message storm: more than {sim.processed - 1} events by {sim.now} ms"
    check(sim, res)
    res.trace = sim.trace.hexdigest()
    return res


def _check_one_view(sim: Sim, load_rng: random.Random) -> str | None:
    """Every honest validator ends in one installed view (a validator alone in another view no longer
    votes: one more fault would stall the chain), within VIEW_CATCHUP_MS while transfers keep coming."""
    validators = [m for m in sim.nodes if m.honest and m.index is not None]

    def one_view() -> bool:
        return len({(m.replica.view, m.replica.normal) for m in validators if m.replica is not None}) == 1

    deadline = sim.now + VIEW_CATCHUP_MS
    while sim.now < deadline and not one_view():
        sim.submit(load_rng.randint(1, 4), "tx")
        sim.run_until(min(deadline, sim.now + 100), stop=one_view)
    if one_view():
        return None
    views = {m.id: (m.replica.view, m.replica.normal) for m in validators if m.replica is not None}
    return f"honest validators in different views {VIEW_CATCHUP_MS} ms after the probes committed: {views}"


def _installed_view(sim: Sim, lagger: int) -> int:
    """The highest view the other honest validators have installed (a lone validator that timed out into
    a view nobody else joined is ahead of the chain, not in it)."""
    return max((m.replica.view for m in sim.nodes if m.honest and m.id != lagger and m.replica is not None
                and m.replica.normal), default=0)


def _check_view_lag(sim: Sim, res: Result, load_rng: random.Random, healed: int | None) -> str | None:
    """The restarted validator (slowlink: the one with slow links) must vote (sign a COMMIT) in the view the
    others have installed within VIEW_CATCHUP_MS of its restart (of `healed`); transfers keep coming so
    there is something to vote on."""
    x = sim.nodes[sim.lagger]
    back = sim.restarted.get(x.id) if healed is None else healed
    if back is None:
        return None
    res.lag = {"node": x.id, "wiped": int(x.id in sim.wiped), "others_view": _installed_view(sim, x.id)}

    def voted() -> bool:
        view = _installed_view(sim, x.id)
        return any(t >= back and v >= view for t, v, _h in sim.commits.get(x.id, []))

    deadline = back + VIEW_CATCHUP_MS
    while sim.now < deadline and not voted():
        sim.submit(load_rng.randint(1, 4), "tx")
        sim.run_until(min(deadline, sim.now + 100), stop=voted)
    first = next((t for t, v, _h in sim.commits.get(x.id, []) if t >= back and v >= res.lag["others_view"]), None)
    res.lag["voted_after_ms"] = -1 if first is None else first - back
    if voted():
        return None
    assert x.replica is not None
    if healed is not None:
        return (f"node {x.id} (slow links until {back} ms) did not vote in the view the others installed, "
                f"{_installed_view(sim, x.id)}, within {VIEW_CATCHUP_MS} ms (its view: {x.replica.view})")
    return (f"node {x.id} restarted at {back} ms (wiped: {x.id in sim.wiped}) and did not vote in the view the "
            f"others installed, {_installed_view(sim, x.id)}, within {VIEW_CATCHUP_MS} ms (its view: "
            f"{x.replica.view})")


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
