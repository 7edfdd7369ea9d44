"""The report's tables and sample picks: held-out evaluations, the last step, the config, and
sample completions early, middle and late in training."""

from __future__ import annotations

import json
from typing import Any

from r1lab.report.plots import extra_eval_keys
from r1lab.report.run import EVAL_ORDER, MAX_TEXT, Row, RunData, num

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
    extra = extra_eval_keys(evals)
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
