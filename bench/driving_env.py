"""Driving environment throughput: control steps per second, W worker processes vs one process.

    python bench/driving_env.py                 # 24 episodes × 3 categories, workers 0 and 2
    python bench/driving_env.py --smoke         # a few seconds

What it measures: the wall time of driving the same episodes (same start states, the same
random anchors drawn per decision, 10 s each at 5 Hz control) through ``driving.pool.EpisodePool``
with ``workers = 0`` (everything in this process) and with ``--workers`` processes, in lockstep as
``r1lab drive`` steps them: every decision goes to every live episode, the next waits for all.
Pool start-up (spawning and importing highway-env) is timed separately and not counted. Printed:
control steps per second each, and, last, the ratio parallel / one process. On 2 cores the
ceiling is ~2×; the lockstep (the slowest episode of a decision holds the others) and the
pipe traffic take some of it.
"""

from __future__ import annotations

import argparse
import time

import common
import numpy as np

from r1lab.driving.env import CATEGORIES, DECISION_STEPS, N_ANCHORS
from r1lab.driving.pool import EpisodePool


def drive(pool: EpisodePool, starts: list[dict], seed: int) -> int:
    """Random valid anchors until every episode ends; returns control steps simulated."""
    rng = np.random.default_rng(seed)
    obs = pool.reset(starts)
    live = {s: o for s, o in obs.items() if o is not None}
    steps = 0
    while live:
        choice = {}
        for s in sorted(live):
            valid = np.flatnonzero(live[s]["valid"])
            choice[s] = int(rng.choice(valid)) if len(valid) else 0
        out = pool.decide(choice)
        steps += DECISION_STEPS * len(choice)
        live = {s: o for s, (o, done) in out.items() if not done and o is not None}
    return steps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=24, help="episodes per category")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per episode")
    p.add_argument("--workers", type=int, default=2, help="processes of the parallel variant")
    p.add_argument("--repeats", type=int, default=2, help="timed rounds (variants alternate)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of this process (the policy is not run)")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    if args.smoke:
        args.episodes, args.duration, args.repeats = 2, 2.0, 1
    common.warn_if_busy()
    assert N_ANCHORS > 0
    starts = [{"category": c, "seed": 10_000 + i, "duration": args.duration}
              for c in CATEGORIES for i in range(args.episodes)]
    t = time.perf_counter()
    pools = {0: EpisodePool(0), args.workers: EpisodePool(args.workers)}
    print(f"pool start-up ({args.workers} workers): {time.perf_counter() - t:.2f} s (not counted)")
    rates: dict[int, list[float]] = {w: [] for w in pools}
    try:
        for r in range(args.repeats):
            for w, pool in pools.items():
                t = time.perf_counter()
                steps = drive(pool, starts, seed=r)
                rates[w].append(steps / (time.perf_counter() - t))
    finally:
        for pool in pools.values():
            pool.close()
    rows = [{"variant": "one process" if w == 0 else f"{w} workers", "rate": common.median(v)}
            for w, v in rates.items()]
    common.print_table(rows, [("variant", "variant", "s"), ("rate", "control steps/s", ".1f")])
    common.print_json("driving_env", {"rates": {str(k): v for k, v in rates.items()}, "machine": common.machine(),
                                      "episodes": len(starts), "duration": args.duration})
    common.print_ratio(f"{args.workers} workers / one process", common.median(rates[args.workers])
                       / common.median(rates[0]))


if __name__ == "__main__":
    main()
