"""Write a run's report: self-contained HTML (plots as base64 PNGs) and Markdown with PNGs beside it.

    r1lab report runs/zero                         # runs/zero/report/report.{html,md} + report_*.png
    r1lab report runs/zero --output /tmp/zero.html # /tmp/zero.html, /tmp/zero.md, /tmp/zero_*.png

Reads the run directory that ``r1lab zero`` writes (``metrics.jsonl`` required; ``config.json``,
``eval.jsonl``, ``samples.jsonl`` optional; see ``r1lab/report.py`` for loading, the summary and the
plots). The report has: a summary line (first vs last held-out pass@1 and the change in points,
mean response length and reflection rate over the first vs last 10% of steps), plots of reward and
pass@1, response length (R1's Figure 3), reflection rate ("aha moment"), KL and clipping, time and
throughput; the held-out evaluations; the last step's metrics; sample completions early, middle and
late; the configuration. Prints the report's paths, then the summary as one JSON object on the last
line.
"""

from __future__ import annotations

import base64
import html
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1lab.config import ConfigError
from r1lab.report import (
    PLOTS,
    RunData,
    clip_text,
    figure_png,
    load_run,
    pick_samples,
    report_tables,
    sample_head,
    step_label,
    summarize_run,
    summary_text,
)

HELP = "write an HTML + Markdown report (plots, evals, samples) of a training run directory"
POSITIONAL = ("run_dir",)


@dataclass
class Config:
    run_dir: str = field(default="", metadata={"help": "run directory written by `r1lab zero`"})
    output: str = field(
        default="",
        metadata={"help": "HTML file to write ('' = RUN_DIR/report/report.html); .md and PNGs go beside it"},
    )

    def validate(self) -> None:
        if not self.run_dir:
            raise ConfigError("run_dir is required: r1lab report RUN_DIR")
        if self.output and Path(self.output).suffix.lower() == ".md":
            raise ConfigError(f"--output names the HTML file (the .md goes beside it), got {self.output}")


CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1050px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
    "th{background:#f3f3f3}td{font-variant-numeric:tabular-nums}img{max-width:100%}"
    "pre{background:#f7f7f7;padding:8px;white-space:pre-wrap;word-break:break-word;font-size:12px}"
    ".warn{color:#a33}.note{color:#555}.summary{font-size:1.1em;background:#eef6ee;padding:8px}"
)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cell(c: str) -> str:
        return c.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(cell, row)) + " |" for row in rows] + [""]


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in the text."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_html(run: RunData, summary: dict[str, Any], images: list[tuple[str, str, bytes | None]]) -> str:
    """A self-contained HTML page: every plot is an embedded base64 PNG, every text is escaped."""
    e = html.escape
    evals, last, config = report_tables(run)
    p = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>r1lab report: {e(str(run.run_dir))}</title>"
    ]
    p += [f"<style>{CSS}</style></head><body><h1>r1lab run report: {e(str(run.run_dir))}</h1>"]
    p += ["<h2>Summary</h2>", f"<p class='summary'>{e(summary_text(summary))}</p>"]
    p += [f"<p class='warn'>Warning: {e(w)}</p>" for w in run.warnings]
    p += [f"<p class='note'>Note: {e(n)}</p>" for n in run.notes]
    p += ["<h2>Training curves</h2>"]
    for _, title, png in images:
        p.append(f"<h3>{e(title)}</h3>")
        if png is None:
            p.append("<p class='note'>Not logged in this run.</p>")
        else:
            data = base64.b64encode(png).decode("ascii")
            p.append(f"<img alt='{e(title)}' src='data:image/png;base64,{data}'>")
    p += ["<h2>Held-out evaluations</h2>"]
    p += [
        _html_table(*evals)
        if evals
        else "<p class='note'>No held-out evaluations (eval.jsonl missing or empty).</p>"
    ]
    p += [
        "<h2>Last training step</h2>",
        _html_table(*last) if last else "<p class='note'>No training steps logged.</p>",
    ]
    p += ["<h2>Sample completions</h2>"]
    picked = pick_samples(run)
    if not picked:
        p.append("<p class='note'>No samples (samples.jsonl missing or empty).</p>")
    for stage, step, rows in picked:
        p.append(f"<h3>{e(stage.capitalize())} (step {step_label(step)})</h3>")
        for row in rows:
            p.append(f"<p><b>{e(sample_head(row))}</b></p>")
            p.append(
                f"<details><summary>prompt</summary><pre>{e(clip_text(row.get('prompt')))}</pre></details>"
            )
            p.append(f"<pre>{e(clip_text(row.get('completion')))}</pre>")
    p += ["<h2>Configuration</h2>", _html_table(*config) if config else "<p class='note'>No config.json.</p>"]
    return "\n".join(p + ["</body></html>", ""])


def render_markdown(run: RunData, summary: dict[str, Any], images: list[tuple[str, str, str | None]]) -> str:
    """The same report in Markdown; ``images`` holds (name, title, PNG file name beside the .md)."""
    evals, last, config = report_tables(run)
    lines = [f"# r1lab run report: {run.run_dir}", "", "## Summary", "", summary_text(summary), ""]
    lines += [f"- **Warning:** {w}" for w in run.warnings] + [f"- Note: {n}" for n in run.notes] + [""]
    lines += ["## Training curves", ""]
    for _, title, file in images:
        lines += [f"### {title}", "", f"![{title}]({file})" if file else "_Not logged in this run._", ""]
    lines += ["## Held-out evaluations", ""]
    lines += _md_table(*evals) if evals else ["_No held-out evaluations (eval.jsonl missing or empty)._", ""]
    lines += ["## Last training step", ""] + (
        _md_table(*last) if last else ["_No training steps logged._", ""]
    )
    lines += ["## Sample completions", ""]
    picked = pick_samples(run)
    if not picked:
        lines += ["_No samples (samples.jsonl missing or empty)._", ""]
    for stage, step, rows in picked:
        lines += [f"### {stage.capitalize()} (step {step_label(step)})", ""]
        for row in rows:
            prompt, completion = clip_text(row.get("prompt")), clip_text(row.get("completion"))
            lines += [f"**{sample_head(row)}**", ""]
            lines += ["Prompt:", "", _fence(prompt), prompt, _fence(prompt), ""]
            lines += ["Completion:", "", _fence(completion), completion, _fence(completion), ""]
    lines += ["## Configuration", ""] + (_md_table(*config) if config else ["_No config.json._", ""])
    return "\n".join(lines)


def write_report(run: RunData, html_path: Path) -> dict[str, Any]:
    """Write ``html_path``, the Markdown beside it (same stem, .md) and one PNG per plot
    (``<stem>_<plot>.png``); return the summary with the paths added."""
    out_dir = html_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize_run(run)
    pngs: list[tuple[str, str, bytes | None]] = []
    files: list[tuple[str, str, str | None]] = []
    for name, title, plot in PLOTS:
        fig = plot(run)
        png, file = None, None
        if fig is not None:
            png, file = figure_png(fig), f"{html_path.stem}_{name}.png"
            (out_dir / file).write_bytes(png)
        pngs.append((name, title, png))
        files.append((name, title, file))
    md_path = html_path.with_suffix(".md")
    html_path.write_text(render_html(run, summary, pngs), encoding="utf-8")
    md_path.write_text(render_markdown(run, summary, files), encoding="utf-8")
    return {**summary, "report_html": str(html_path), "report_md": str(md_path)}


def html_path_for(cfg: Config) -> Path:
    """Where the HTML goes: --output (a directory gets report.html inside), else RUN_DIR/report/."""
    if not cfg.output:
        return Path(cfg.run_dir) / "report" / "report.html"
    out = Path(cfg.output)
    return out / "report.html" if out.is_dir() or cfg.output.endswith(("/", "\\")) else out


def run(cfg: Config) -> dict[str, Any]:
    cfg.validate()
    run_data = load_run(cfg.run_dir)
    for warning in run_data.warnings:
        print(f"r1lab report: warning: {warning}", file=sys.stderr)
    summary = write_report(run_data, html_path_for(cfg))
    print(f"report: {summary['report_html']}")
    print(f"markdown: {summary['report_md']}")
    print(summary_text(summary))
    print(json.dumps(summary))
    return summary
