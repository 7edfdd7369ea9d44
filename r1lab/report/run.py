"""A training run directory, read: its metrics, evaluations, samples and config, and its summary.

    python -c "from r1lab.report.run import load_run, summarize_run; print(summarize_run(load_run('runs/zero')))"

Reads what the training commands write into a run directory; only ``metrics.jsonl`` is required:

- ``config.json``   the resolved config (a flat dict), shown as a table;
- ``metrics.jsonl`` one object per training step; after a resume a step can appear twice and the
  LAST occurrence wins; any key may be missing, and only what is present is plotted;
- ``eval.jsonl``    one object per held-out evaluation (pass@1, cons@k, pass@k, lengths, ...);
- ``samples.jsonl`` sampled completions ``{step, prompt, completion, reward, correct}``.

Malformed lines are skipped, and the report names the file and line numbers. Everything here is
pure; the plots are in ``plots.py``, the tables in ``tables.py``, HTML/Markdown in ``render.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
