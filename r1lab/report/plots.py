"""The report's plots, after DeepSeek-R1's figures: reward and held-out pass@1 (Figure 2), response
length (Figure 3), reflection rate (the "aha moment"), KL and clipping, time and throughput.

Figures are drawn on ``matplotlib.figure.Figure`` and saved through the Agg canvas: no pyplot, no
global state, no display needed. Each ``plot_*`` takes a ``RunData`` and returns a figure, or
None when the run logged nothing it could draw.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from r1lab.report.run import Row, RunData, default_span, ema, num, series

# ---------------------------------------------------------------- plots


def _curve(
    ax: Any, rows: list[Row], key: str, color: str, label: str = "", smooth: bool = False, **kw: Any
) -> bool:
    """Plot ``key`` vs step; with smooth, the raw values faintly and their EMA boldly. False if absent."""
    xs, ys = series(rows, key)
    if not ys:
        return False
    label = label or key
    span = default_span(len(ys))
    if smooth and span > 1:
        ax.plot(xs, ys, color=color, alpha=0.3, lw=1, label=f"{label} (per step)")
        ax.plot(xs, ema(ys, span), color=color, lw=2, label=f"{label} (EMA, span {span})", **kw)
    else:
        ax.plot(xs, ys, color=color, label=label, **kw)
    return True


def _style(ax: Any, title: str, ylabel: str, has_data: bool, empty: str = "no data logged") -> None:
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if has_data:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", color="0.4")


def extra_eval_keys(evals: list[Row]) -> list[str]:
    """cons@k and pass@k beside pass@1, then each member's pass@1 of a task mixture (``NAME/pass@1``)."""
    keys = {k for r in evals for k in r if re.fullmatch(r"(pass|cons)@\w+|[\w:.-]+/pass@1", k) and k != "pass@1"}
    return sorted(keys, key=lambda k: ("/" in k, not k.startswith("cons"), k))


def plot_reward(run: RunData) -> Figure | None:
    """Training reward (raw + EMA, and its components) above held-out pass@1 (and cons@k, pass@k)."""
    if not series(run.metrics, "reward")[1] and not series(run.evals, "pass@1")[1]:
        return None
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    has = _curve(top, run.metrics, "reward", "C0", smooth=True)
    for key, color in (("reward/accuracy", "C2"), ("reward/format", "C1"), ("reward/language", "C4")):
        cx, cy = series(run.metrics, key)
        span = default_span(len(cy))
        if cy:
            label = f"{key} (EMA)" if span > 1 else key
            top.plot(cx, ema(cy, span), color=color, lw=1.2, ls="--", label=label)
            has = True
    _style(top, "Training reward", "reward", has)
    top.set_xlabel("")  # shared with the panel below
    has = _curve(bottom, run.evals, "pass@1", "C3", label="held-out pass@1", marker="o", lw=2)
    for i, key in enumerate(extra_eval_keys(run.evals)):
        has |= _curve(bottom, run.evals, key, f"C{5 + i % 5}", label=f"held-out {key}", marker=".", alpha=0.6)
    has |= _curve(bottom, run.metrics, "accuracy", "C2", label="train accuracy", smooth=True, ls="--")
    _style(
        bottom,
        "Held-out pass@1 (and training accuracy)",
        "accuracy",
        has,
        "no held-out evaluations (eval.jsonl missing or empty)",
    )
    fig.suptitle("Reward and held-out pass@1 vs training step")
    return fig


def plot_length(run: RunData) -> Figure | None:
    """Mean completion length per step (R1's Figure 3), max length faintly, held-out mean length."""
    keys = [("metrics", "response_length"), ("metrics", "response_length_max"), ("evals", "mean_length")]
    if not any(series(getattr(run, src), k)[1] for src, k in keys):
        return None
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    has = _curve(
        ax, run.metrics, "response_length_max", "0.6", label="max completion length", alpha=0.35, lw=1
    )
    has |= _curve(ax, run.metrics, "response_length", "C0", label="mean completion length", smooth=True)
    has |= _curve(ax, run.evals, "mean_length", "C3", label="held-out mean length", marker="s", ls="none")
    _style(
        ax, "Mean response length during training (cf. DeepSeek-R1 Figure 3)", "tokens per completion", has
    )
    return fig


def plot_reflection(run: RunData) -> Figure | None:
    """Share of completions with reflection words ("wait", "verify"...): the "aha moment"."""
    if not series(run.metrics, "reflection_rate")[1] and not series(run.evals, "reflection_rate")[1]:
        return None
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    has = _curve(ax, run.metrics, "reflection_rate", "C4", label="train", smooth=True)
    has |= _curve(ax, run.evals, "reflection_rate", "C3", label="held-out", marker="o")
    _style(ax, 'Reflection-word rate ("aha moment")', "share of completions", has)
    return fig


def plot_kl_clip(run: RunData) -> Figure | None:
    """KL to the reference (left) and the share of clipped tokens, low and high side (right)."""
    if not any(series(run.metrics, k)[1] for k in ("kl", "clip_low", "clip_high")):
        return None
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    _style(left, "KL to the reference policy", "KL (per token)", _curve(left, run.metrics, "kl", "C0"))
    has = _curve(right, run.metrics, "clip_low", "C1", label="clip_low (ρ < 1 − ε_low)")
    has |= _curve(right, run.metrics, "clip_high", "C2", label="clip_high (ρ > 1 + ε_high)")
    _style(right, "Clip fractions", "share of tokens", has)
    return fig


def plot_time(run: RunData) -> Figure | None:
    """Seconds per step split into rollout / update / other (left) and generation tokens/s (right)."""
    rows = [
        r
        for r in run.metrics
        if num(r.get("time/rollout")) is not None and num(r.get("time/update")) is not None
    ]
    if not rows and not any(series(run.metrics, k)[1] for k in ("time/step", "tokens_per_s")):
        return None
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    if rows:
        xs = [num(r["step"]) or 0.0 for r in rows]
        roll, upd = [num(r["time/rollout"]) for r in rows], [num(r["time/update"]) for r in rows]
        stacks, labels = [roll, upd], ["rollout", "update"]
        if all(num(r.get("time/step")) is not None for r in rows):
            stacks.append([max(0.0, num(r["time/step"]) - a - b) for r, a, b in zip(rows, roll, upd)])
            labels.append("other")
        left.stackplot(xs, *stacks, labels=labels, colors=["C0", "C1", "0.75"][: len(stacks)], alpha=0.8)
        _style(left, "Time per step", "seconds", True)
    else:
        _style(left, "Time per step", "seconds", _curve(left, run.metrics, "time/step", "C0", label="step"))
    _style(right, "Throughput", "tokens / s", _curve(right, run.metrics, "tokens_per_s", "C2"))
    return fig


PLOTS: tuple[tuple[str, str, Callable[[RunData], Figure | None]], ...] = (
    ("reward", "Reward and held-out pass@1", plot_reward),
    ("length", "Response length", plot_length),
    ("reflection", "Reflection rate", plot_reflection),
    ("kl_clip", "KL and clipping", plot_kl_clip),
    ("time", "Time and throughput", plot_time),
)


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes (Agg canvas)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


