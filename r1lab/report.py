"""Run report: read a training run directory, plot its curves, write HTML + Markdown.

    r1lab report runs/zero                # -> runs/zero/report/report.{html,md} + PNGs beside them
    python -c "from r1lab.report import load_run, summarize_run; print(summarize_run(load_run('runs/zero')))"

Reads what ``r1lab zero`` writes into its run directory; only ``metrics.jsonl`` is required:

- ``config.json``   the resolved config (a flat dict), shown as a table;
- ``metrics.jsonl`` one object per training step; after a resume a step can appear twice and the
  LAST occurrence wins; any key may be missing, and only what is present is plotted;
- ``eval.jsonl``    one object per held-out evaluation (pass@1, cons@k, pass@k, lengths, ...);
- ``samples.jsonl`` sampled completions ``{step, prompt, completion, reward, correct}``.

Malformed lines are skipped, and the report names the file and line numbers. The plots follow
DeepSeek-R1: reward and held-out pass@1 (its Figure 2), mean response length (Figure 3: the model
learns to think longer), the rate of reflection words (the "aha moment"), KL and clipping, and
where the time goes. Figures are drawn on ``matplotlib.figure.Figure`` and saved through the Agg
canvas: no pyplot, no global state, no display needed. Everything here is pure; the HTML and
Markdown rendering and file writing live in ``r1lab/commands/report.py``.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from r1lab.config import ConfigError

Row = dict[str, Any]
MAX_TEXT = 4000  # characters of a prompt/completion shown in the report
EVAL_ORDER = ("step", "pass@1", "format_rate", "mean_length", "reflection_rate", "truncated_share")


# ---------------------------------------------------------------- loading


def read_jsonl(path: Path) -> tuple[list[Row], list[int]]:
    """Parse a JSONL file into (rows, 1-based numbers of malformed lines); blank lines are ignored.

    A line that is not valid JSON, or is JSON but not an object, counts as malformed (a run that
    crashed mid-write leaves a truncated last line)."""
    rows: list[Row] = []
    bad: list[int] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                bad.append(number)
                continue
            if isinstance(obj, dict):
                rows.append(obj)
            else:
                bad.append(number)
    return rows, bad


def num(value: Any) -> float | None:
    """The value as a finite float, or None (missing, NaN, inf, bool, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def last_perstep_label(rows: list[Row]) -> list[Row]:
    """Keep the last occurrence of each step (a resumed run logs some steps again), sorted by step.

    A row without a numeric "step" gets the previous row's step + 1 (0 for the first row)."""
    by_step: dict[float, Row] = {}
    prev = -1.0
    for row in rows:
        step = num(row.get("step"))
        if step is None:
            step = prev + 1
            row = {**row, "step": int(step)}
        by_step[step] = row
        prev = step
    return [by_step[s] for s in sorted(by_step)]


def series(rows: list[Row], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows where both "step" and ``key`` are finite numbers."""
    xs, ys = [], []
    for row in rows:
        x, y = num(row.get("step")), num(row.get(key))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def ema(values: list[float], span: int) -> list[float]:
    """Exponential moving average: s_0 = x_0, s_t = a·x_t + (1 − a)·s_{t−1}, a = 2/(span + 1).

    span 1 returns the values unchanged; span 3 gives a = 0.5, so [0, 10, 10] -> [0, 5, 7.5]."""
    alpha = 2.0 / (max(1, span) + 1)
    out: list[float] = []
    for x in values:
        out.append(x if not out else alpha * x + (1 - alpha) * out[-1])
    return out


def default_span(n: int) -> int:
    """EMA span for n points: a tenth of the run, between 1 and 50."""
    return max(1, min(50, n // 10))


def window_mean(values: list[float], last: bool = False) -> float | None:
    """Mean of the first (or last) 10% of the values, at least one value; None if empty."""
    if not values:
        return None
    k = max(1, -(-len(values) // 10))  # ceil(n / 10) in integers: 30 values -> 3
    part = values[-k:] if last else values[:k]
    return sum(part) / len(part)


@dataclass
class RunData:
    """Everything read from a run directory: deduplicated metrics/evals, samples, and notes."""

    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[Row] = field(default_factory=list)
    evals: list[Row] = field(default_factory=list)
    samples: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # missing files, re-logged steps
    warnings: list[str] = field(default_factory=list)  # malformed lines and files
    skipped: dict[str, list[int]] = field(default_factory=dict)  # file name -> bad line numbers


def _lines(numbers: list[int], most: int = 20) -> str:
    text = ", ".join(map(str, numbers[:most]))
    return text + (f", ... ({len(numbers) - most} more)" if len(numbers) > most else "")


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory; raise ConfigError if it or its metrics.jsonl does not exist."""
    d = Path(run_dir)
    if not d.is_dir():
        raise ConfigError(f"run directory not found: {d}")
    if not (d / "metrics.jsonl").is_file():
        raise ConfigError(f"no metrics.jsonl in {d}: is it a run directory written by `r1lab zero`?")
    run = RunData(run_dir=d)
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        run.notes.append("config.json not found: no configuration table.")
    else:
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError as exc:
            cfg = None
            run.warnings.append(f"{cfg_path}: not valid JSON ({exc}); configuration not shown.")
        if isinstance(cfg, dict):
            run.config = cfg
        elif cfg is not None:
            run.warnings.append(f"{cfg_path}: expected a JSON object; configuration not shown.")
    loaded: dict[str, list[Row]] = {}
    for name in ("metrics.jsonl", "eval.jsonl", "samples.jsonl"):
        path = d / name
        if not path.is_file():
            run.notes.append(f"{name} not found.")
            continue
        loaded[name], bad = read_jsonl(path)
        if bad:
            run.skipped[name] = bad
            run.warnings.append(f"{path}: skipped {len(bad)} malformed line(s): line {_lines(bad)}.")
    raw_metrics = loaded.get("metrics.jsonl", [])
    run.metrics = last_perstep_label(raw_metrics)
    run.evals = last_perstep_label(loaded.get("eval.jsonl", []))
    run.samples = loaded.get("samples.jsonl", [])
    if len(raw_metrics) > len(run.metrics):
        run.notes.append(
            f"metrics.jsonl: {len(raw_metrics) - len(run.metrics)} step(s) logged more than once "
            "(resumed run); the last occurrence of each step is used."
        )
    return run


# ---------------------------------------------------------------- summary


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _as_step(x: float | None) -> int | float | None:
    return int(x) if x is not None and x == int(x) else x


def summarize_run(run: RunData) -> dict[str, Any]:
    """Headline numbers: first vs last held-out pass@1 (change in percentage points), and the mean
    reward / response length / reflection rate over the first vs the last 10% of training steps."""
    steps = [num(r.get("step")) for r in run.metrics]
    out: dict[str, Any] = {
        "run_dir": str(run.run_dir),
        "steps": len(run.metrics),
        "first_step": _as_step(steps[0]) if steps else None,
        "last_step": _as_step(steps[-1]) if steps else None,
        "evals": len(run.evals),
    }
    ex, ey = series(run.evals, "pass@1")
    out["pass@1_first"] = _round(ey[0]) if ey else None
    out["pass@1_last"] = _round(ey[-1]) if ey else None
    out["pass@1_change_points"] = _round(100 * (ey[-1] - ey[0])) if ey else None
    out["pass@1_first_step"] = _as_step(ex[0]) if ex else None
    out["pass@1_last_step"] = _as_step(ex[-1]) if ex else None
    for key in ("reward", "response_length", "reflection_rate"):
        _, ys = series(run.metrics, key)
        out[f"{key}_first10pct"] = _round(window_mean(ys))
        out[f"{key}_last10pct"] = _round(window_mean(ys, last=True))
    _, ry = series(run.evals, "reflection_rate")
    out["eval_reflection_rate_first"] = _round(ry[0]) if ry else None
    out["eval_reflection_rate_last"] = _round(ry[-1]) if ry else None
    out["skipped_lines"] = sum(len(v) for v in run.skipped.values())
    return out


def step_label(x: Any) -> str:
    x = num(x)
    return "?" if x is None else (str(int(x)) if x == int(x) else f"{x:g}")


def summary_text(s: dict[str, Any]) -> str:
    """The summary as one readable sentence."""
    parts = []
    if s["pass@1_first"] is not None:
        parts.append(
            f"held-out pass@1 {100 * s['pass@1_first']:.1f}% (step {step_label(s['pass@1_first_step'])}) → "
            f"{100 * s['pass@1_last']:.1f}% (step {step_label(s['pass@1_last_step'])}), "
            f"{s['pass@1_change_points']:+.1f} points"
        )
    else:
        parts.append("no held-out evaluations")
    a, b = s["response_length_first10pct"], s["response_length_last10pct"]
    if a is not None:
        parts.append(f"mean response length {a:.1f} → {b:.1f} tokens (first vs last 10% of steps)")
    a, b = s["reflection_rate_first10pct"], s["reflection_rate_last10pct"]
    if a is not None:
        parts.append(f"reflection rate {a:.3f} → {b:.3f} (training, first vs last 10% of steps)")
    a, b = s["eval_reflection_rate_first"], s["eval_reflection_rate_last"]
    if a is not None:
        parts.append(f"held-out reflection rate {a:.3f} → {b:.3f}")
    text = "; ".join(parts)
    return f"{s['steps']} training steps: {text}."


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


def _extra_eval_keys(evals: list[Row]) -> list[str]:
    keys = {k for r in evals for k in r if re.fullmatch(r"(pass|cons)@\w+", k) and k != "pass@1"}
    return sorted(keys, key=lambda k: (not k.startswith("cons"), k))


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
    for i, key in enumerate(_extra_eval_keys(run.evals)):
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


# ---------------------------------------------------------------- samples and tables


def pick_samples(run: RunData, per_stage: int = 3) -> list[tuple[str, float, list[Row]]]:
    """Up to ``per_stage`` samples from the sampled steps nearest the start, middle and end of
    training, as (stage, step, rows); a step nearest to two stages is shown once."""
    steps = sorted({s for s in (num(r.get("step")) for r in run.samples) if s is not None})
    if not steps:
        return []
    trained = [s for s in (num(r.get("step")) for r in run.metrics) if s is not None] or steps
    lo, hi = trained[0], trained[-1]
    out, used = [], set()
    for stage, target in (("early", lo), ("middle", (lo + hi) / 2), ("late", hi)):
        step = min(steps, key=lambda s: (abs(s - target), s))
        if step not in used:
            used.add(step)
            out.append((stage, step, [r for r in run.samples if num(r.get("step")) == step][:per_stage]))
    return out


def fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits, containers as JSON, None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def eval_table(evals: list[Row]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the held-out evaluations: step and pass@1 first, then the other columns."""
    seen = list(dict.fromkeys(k for r in evals for k in r))
    extra = _extra_eval_keys(evals)
    header = [k for k in EVAL_ORDER[:2] if k in seen] + extra
    header += [k for k in EVAL_ORDER[2:] if k in seen] + [
        k for k in seen if k not in header and k not in EVAL_ORDER
    ]
    return header, [[fmt(r.get(k)) for k in header] for r in evals]


def clip_text(text: Any) -> str:
    """The text, cut to MAX_TEXT characters with a note of how much was left out."""
    text = str(text if text is not None else "")
    return (
        text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"\n... [{len(text) - MAX_TEXT} more characters]"
    )


def sample_head(row: Row) -> str:
    """The line above a sample: its reward and whether it was correct."""
    return f"reward {fmt(row.get('reward')) or '?'}, correct: {fmt(row.get('correct')) or '?'}"


def report_tables(run: RunData) -> tuple[tuple[list[str], list[list[str]]] | None, ...]:
    """(header, rows) or None for: held-out evaluations, every metric of the last step, the config."""
    last = run.metrics[-1] if run.metrics else {}
    last_rows = [[str(k), fmt(v)] for k, v in last.items() if k != "step"]
    config_rows = [[str(k), fmt(v)] for k, v in run.config.items()]
    return (
        eval_table(run.evals) if run.evals else None,
        (["metric", "value"], last_rows) if last_rows else None,
        (["key", "value"], config_rows) if config_rows else None,
    )
