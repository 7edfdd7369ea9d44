"""HTML and Markdown of a run report: self-contained HTML (plots as base64 PNGs, every text
escaped) and Markdown with the PNGs beside it. ``write_report`` writes all three."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from r1lab.report.plots import PLOTS, figure_png
from r1lab.report.run import RunData, step_label, summarize_run, summary_text
from r1lab.report.tables import clip_text, pick_samples, report_tables, sample_head

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
