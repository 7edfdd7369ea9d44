"""Write a run's report: self-contained HTML (plots as base64 PNGs) and Markdown with PNGs beside it.

    r1lab report runs/zero                         # runs/zero/report/report.{html,md} + report_*.png
    r1lab report runs/zero --output /tmp/zero.html # /tmp/zero.html, /tmp/zero.md, /tmp/zero_*.png

Reads the run directory that ``r1lab zero`` writes (``metrics.jsonl`` required; ``config.json``,
``eval.jsonl``, ``samples.jsonl`` optional; see ``r1lab/report/`` for loading, the summary, the plots and
the rendering). The report has: a summary line (first vs last held-out pass@1 and the change in points,
mean response length and reflection rate over the first vs last 10% of steps), plots of reward and
pass@1, response length (R1's Figure 3), reflection rate ("aha moment"), KL and clipping, time and
throughput; the held-out evaluations; the last step's metrics; sample completions early, middle and
late; the configuration. Prints the report's paths, then the summary as one JSON object on the last
line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1lab.config import ConfigError
from r1lab.report.render import write_report
from r1lab.report.run import load_run, summary_text

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
