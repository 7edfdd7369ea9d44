"""The driving report: IDM/MOBIL vs behaviour cloning vs GRPO on held-out start states per
category, training curves, expert load and specialisation, and rendered frames.

Writes ``RUN/drive_report.md`` with PNG plots under ``RUN/plots`` and frame strips under
``RUN/frames`` (one strip per category: six evenly spaced frames of a greedy held-out drive).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("reward", "collision", "progress", "comfort", "ttc", "speed", "on_road")


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def render_frames(pool: Any, model_dir: Path, cats: tuple[str, ...], duration: float, out_dir: Path,
                  n_frames: int = 6) -> list[str]:
    """Drive one held-out start per category greedily with rendering on; save a PNG strip each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from r1lab.driving.policy import DriverPolicy
    from r1lab.driving.rollout import collect, held_out_starts
    from r1lab.models import quiet_hf

    with quiet_hf():
        policy = DriverPolicy.from_pretrained(model_dir)
    starts = held_out_starts(1, cats)
    roll = collect(policy, pool, starts, 1, duration=duration, greedy=True, render=True)
    frames = pool.frames(list(range(len(starts))))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, start in enumerate(starts):
        shots = frames[i][0]
        if not shots:
            continue
        pick = np.linspace(0, len(shots) - 1, min(n_frames, len(shots))).round().astype(int)
        strip = np.concatenate([shots[j] for j in pick], axis=1)
        path = out_dir / f"{start['category']}.png"
        plt.imsave(path, strip)
        c = roll.components[i]
        paths.append({"category": start["category"], "path": str(path.relative_to(out_dir.parent)),
                      "reward": float(roll.rewards[i]), "collision": c["collision"], "progress": c["progress"]})
    return paths


def _plot(run_dir: Path, name: str, series: dict[str, tuple[list, list]], ylabel: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(xs for xs, _ in series.values()):
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for label, (xs, ys) in series.items():
        if xs:
            ax.plot(xs, ys, label=label, marker="o" if len(xs) < 15 else None)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    (run_dir / "plots").mkdir(exist_ok=True)
    path = run_dir / "plots" / f"{name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path.relative_to(run_dir))


def _table(summary: dict) -> list[str]:
    lines = ["| policy | category | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for policy in ("idm", "bc", "grpo"):
        for cat, row in (summary.get(policy) or {}).items():
            if cat == "sampled":
                cat = f"all, sampled at T={summary.get('temperature', 1.0):g}"
            cells = " | ".join(f"{row.get(k, float('nan')):.3f}" for k in COLUMNS)
            lines.append(f"| {policy} | {cat} | {cells} |")
    return lines


def write(run_dir: Path, summary: dict) -> Path:
    """``drive_report.md`` from the run's stage folders and ``summary``."""
    metrics = _rows(run_dir / "4-grpo" / "metrics.jsonl")
    evals = _rows(run_dir / "4-grpo" / "eval.jsonl")
    steps = [r["step"] for r in metrics]
    plots = []
    plots.append(_plot(run_dir, "train_reward", {k: (steps, [r.get(k) for r in metrics])
                                                  for k in ("reward", "collision", "progress", "comfort")},
                       "training batch mean"))
    cats = [k for k in (evals[-1]["metrics"] if evals else {}) if k not in ("all", "sampled")]
    plots.append(_plot(run_dir, "eval_reward", {c: ([e["step"] for e in evals],
                                                    [e["metrics"][c]["reward"] for e in evals]) for c in cats},
                       "held-out reward (greedy)"))
    loads = {f"layer {i + 1}": (steps, [r["max_over_mean_load"][i] for r in metrics])
             for i in range(len(metrics[0]["max_over_mean_load"]) if metrics else 0)}
    plots.append(_plot(run_dir, "expert_load", loads, "max / mean expert load"))
    layers = len(evals[-1]["experts"]["layers"]) if evals else 0
    plots.append(_plot(run_dir, "expert_specialisation",
                       {f"layer {i + 1}": ([e["step"] for e in evals], [e["experts"]["layers"][i]["mi_share"] for e in evals])
                        for i in range(layers)}, "I(top-1 expert; category) / H(category)"))
    lines = ["# r1lab drive report", "", f"Run: `{run_dir}`", "",
             "## Held-out start states (greedy), per category", "", *_table(summary), ""]
    experts = (summary.get("experts") or {}).get("layers", [])
    if experts:
        lines += ["## Experts (final policy, held-out drives)", "",
                  "| layer | max/mean load | I(top-1 expert; category) bits | share of H(category) |",
                  "|---|---|---|---|"]
        for i, layer in enumerate(experts):
            lines.append(f"| {i + 1} | {layer['max_over_mean']:.2f} | {layer['mi_bits']:.3f} | {layer['mi_share']:.3f} |")
        lines += ["", "Load share per expert by category (layer 1):", "",
                  "| category | " + " | ".join(f"e{j}" for j in range(len(experts[0]["load_share"]))) + " |",
                  "|---" * (len(experts[0]["load_share"]) + 1) + "|"]
        for cat, share in experts[0]["by_category"].items():
            lines.append(f"| {cat} | " + " | ".join(f"{x:.2f}" for x in share) + " |")
        lines.append("")
    lines += [f"![]({p})" for p in plots if p] + [""]
    for f in summary.get("frames") or []:
        lines += [f"**{f['category']}** (reward {f['reward']:.3f}, collision {f['collision']:.0f}, "
                  f"progress {f['progress']:.2f})", "", f"![]({f['path']})", ""]
    path = run_dir / "drive_report.md"
    path.write_text("\n".join(lines))
    return path
