"""Seeded chaos on real node processes (`make chaos`): see devtools/chaos/run.py for the run and its
report, schedule.py for the faults a seed draws, cluster.py/netns.py/proxy.py for how they are made,
client.py for the independent client and verify.py for the verdict."""
