"""Summarise finished `r1lab zero` runs as a Markdown table (median step time, peak memory,
held-out pass@1 at the start and the end).

    python scripts/summarize_runs.py runs/zero-s0 runs/zero-s1 runs/ppo-s0
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def summarize(run_dir: Path) -> dict:
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    evals = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines() if x.strip()]
    cfg = json.loads((run_dir / "config.json").read_text())
    return {
        "run": run_dir.name,
        "algo": cfg["algo"],
        "seed": cfg["seed"],
        "steps": len(metrics),
        "s/step (median)": statistics.median(m["time/step"] for m in metrics),
        "rollout s (median)": statistics.median(m["time/rollout"] for m in metrics),
        "update s (median)": statistics.median(m["time/update"] for m in metrics),
        "peak RSS MB": max(m.get("peak_rss_mb", 0.0) for m in metrics),
        "pass@1 start": evals[0]["pass@1"],
        "pass@1 end": evals[-1]["pass@1"],
        "length start": metrics[0]["response_length"],
        "length end": statistics.mean(m["response_length"] for m in metrics[-10:]),
        "reflection start": metrics[0]["reflection_rate"],
        "reflection end": statistics.mean(m["reflection_rate"] for m in metrics[-10:]),
    }


def main(paths: list[str]) -> None:
    rows = [summarize(Path(p)) for p in paths]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
