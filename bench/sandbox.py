"""Cost of grading one program in r1lab's code sandbox, against a bare interpreter start.

    python bench/sandbox.py               # 40 programs per variant
    python bench/sandbox.py --runs 3      # a smoke run (a few seconds)

What it measures: the wall time of grading one small program (a function and three asserts,
all passing) with ``Sandbox.run``, one program at a time (latency, not throughput), at the
highest level this machine reaches and at the lower ones (layers switched off), against
``subprocess.run([python, "-c", "pass"])`` — a bare start of the same interpreter — and
``python -I -S -c pass``, the floor the sandbox's child starts from (it skips ``site``). Variants
alternate within each round so that load from other processes hits them alike; one untimed
warm-up round. Printed: each variant's median and 10th/90th percentiles in ms, the overhead of
the top level over the bare start in ms (target ≤ 50), and, as the last line, the ratio of the
two medians. The probe at ``Sandbox()`` (a few runs, once per process) is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from r1lab.rewards.sandbox import Sandbox  # noqa: E402

CODE = "def add(a, b):\n    return a + b\n"
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add('a', 'b') == 'ab'"]


def bare(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def graded(sbx: Sandbox) -> float:
    start = time.perf_counter()
    v = sbx.run(CODE, TESTS, timeout=30)
    took = time.perf_counter() - start
    if not v.all_passed:
        raise SystemExit(f"the benchmark program did not pass at level {sbx.level}: {v}")
    return took


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40, help="programs per variant")
    args = ap.parse_args()
    py = sys.executable
    top = Sandbox()
    variants = {"bare python -c pass": lambda: bare([py, "-c", "pass"]),
                "bare python -I -S -c pass": lambda: bare([py, "-I", "-S", "-c", "pass"]),
                "sandbox process (no layers)": (lambda s: lambda: graded(s))(
                    Sandbox(namespaces=False, seccomp=False, cgroups=False))}
    if top.level in ("namespaces", "full"):
        ns_only = Sandbox(seccomp=False, cgroups=False)
        variants["sandbox namespaces only"] = lambda: graded(ns_only)
    top_name = f"sandbox {top.level} (top level here)"
    variants[top_name] = lambda: graded(top)
    print(f"level reached: {top.level}")
    for name, state in top.layers.items():
        print(f"  {name}: {state}")
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.runs + 1):
        for name, fn in variants.items():
            took = fn()
            if round_:
                times[name].append(took)
    print(f"{'variant':36s} {'median ms':>10s} {'p10':>7s} {'p90':>7s}   ({args.runs} runs each)")
    for name, ts in times.items():
        print(f"{name:36s} {1000 * statistics.median(ts):10.1f} {1000 * percentile(ts, 0.1):7.1f} "
              f"{1000 * percentile(ts, 0.9):7.1f}")
    base = statistics.median(times["bare python -c pass"])
    sbx = statistics.median(times[top_name])
    floor = statistics.median(times["bare python -I -S -c pass"])
    print(f"overhead of {top_name} over bare python -c pass: {1000 * (sbx - base):.1f} ms (target <= 50 ms)")
    print(f"overhead of {top_name} over python -I -S -c pass: {1000 * (sbx - floor):.1f} ms")
    print(f"ratio sandbox/bare (medians): {sbx / base:.2f}")


if __name__ == "__main__":
    main()
