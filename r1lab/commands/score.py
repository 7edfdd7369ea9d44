"""Grade saved responses with a task's own ``grade()`` and report pass@1, cons@k, pass@k.

    r1lab score RESPONSES.jsonl --task gsm8k --output graded.jsonl
    r1lab score math_samples.jsonl --task math --skip-bad --timeout 3

RESPONSES.jsonl has one problem a line: the gold answer (``answer``; for GSM8K a bare number or
a whole ``#### N`` solution, for MATH LaTeX or a solution with ``\\boxed{}``), a list of
``responses`` (strings; ``null`` and ``""`` are graded as wrong, not errors), optionally
``lengths`` (token counts, one per response) and any other fields, which are copied through.
Use it to score samples from another engine (vLLM, an API) with exactly the reward r1lab trains on.

Output (``--output``): each row again, plus ``correct``, ``extracted`` and ``format_ok`` lists
(one entry per response; ``grader_errors`` too when a comparison timed out or failed).
stdout: the metrics (``r1lab.evaluation.metrics.summarize``) + ``skipped``, ``source``, ``task`` as ONE
JSON object on the last line; the progress bar goes to stderr. A bad row stops the run with
its file, line and field named, or with ``--skip-bad`` is skipped and counted in ``skipped``.
MATH answers are compared in batches (one worker round trip per batch), so 500 rows take seconds.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from r1lab.config import ConfigError
from r1lab.data import DataError, read_rows
from r1lab.evaluation.metrics import summarize
from r1lab.tasks import TASKS, check_spec, get_task, task_kwargs

HELP = "grade a RESPONSES.jsonl file with a task's grader and print pass@1, cons@k, pass@k"
POSITIONAL = ("responses",)


@dataclass
class Config:
    responses: str = field(
        default="", metadata={"help": "JSONL file: gold answer + a list of responses per row"}
    )
    task: str = field(default="gsm8k", metadata={"help": "task whose grade() is used: " + " | ".join(TASKS)})
    output: str = field(default="", metadata={"help": "write graded rows to this JSONL file ('' = don't)"})
    template: str = field(
        default="",
        metadata={
            "help": "template the responses were sampled with; r1/short mean the prompt opened <think> ('' = task default)"
        },
    )
    task_options: list[str] = field(default_factory=list, metadata={"help": "task options KEY=VALUE"})
    sandbox_min_level: str = field(default="", metadata={
        "help": "code task: refuse to grade below this containment level (process | seccomp | namespaces | full)"})
    skip_bad: bool = field(default=False, metadata={"help": "skip (and count) bad rows instead of stopping"})
    response_field: str = field(default="responses", metadata={"help": "field holding the list of responses"})
    answer_field: str = field(default="answer", metadata={"help": "field holding the gold answer"})
    length_field: str = field(default="lengths", metadata={"help": "optional field of per-response lengths"})
    timeout: float = field(default=5.0, metadata={"help": "seconds per symbolic comparison (math)"})
    batch_size: int = field(default=256, metadata={"help": "responses graded per batch"})

    def validate(self) -> None:
        if not self.responses:
            raise ConfigError("give the RESPONSES.jsonl file to score")
        check_spec(self.task)
        if not self.timeout > 0:
            raise ConfigError("timeout must be > 0 seconds")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")


def _row_checker(cfg: Config):
    """Per-row check for read_rows: responses must be a non-empty list of strings/nulls."""

    def check(row: dict) -> str | None:
        resp = row.get(cfg.response_field)
        if not isinstance(resp, list) or not resp:
            got = (
                "missing"
                if resp is None
                else f"{type(resp).__name__} of length {len(resp)}"
                if isinstance(resp, list)
                else type(resp).__name__
            )
            return f"field {cfg.response_field!r}: expected a non-empty list of strings, got {got}"
        for j, r in enumerate(resp):
            if r is not None and not isinstance(r, str):
                return f"field {cfg.response_field!r}[{j}]: expected a string or null, got {type(r).__name__}"
        lengths = row.get(cfg.length_field)
        if lengths is not None and (
            not isinstance(lengths, list)
            or len(lengths) != len(resp)
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in lengths)
        ):
            return f"field {cfg.length_field!r}: expected a list of {len(resp)} numbers (one per response)"
        return None

    return check


def _make_task(cfg: Config):
    task = get_task(cfg.task, **task_kwargs(cfg))
    if hasattr(task.options, "grader_timeout"):
        task.options.grader_timeout = cfg.timeout
    return task


def run(cfg: Config) -> dict[str, Any]:
    cfg.validate()
    task = _make_task(cfg)
    required = (cfg.answer_field,) if task.needs_answer else ()  # code rows carry their tests instead
    rows, skipped = read_rows(cfg.responses, required=required, skip_bad=cfg.skip_bad, validate=_row_checker(cfg))
    if not rows:
        raise DataError(
            f"{cfg.responses}: no rows to score" + (f" ({skipped} bad rows skipped)" if skipped else "")
        )
    flat = [
        (i, r if isinstance(r, str) else "") for i, row in enumerate(rows) for r in row[cfg.response_field]
    ]
    examples = [dict(row, answer=row[cfg.answer_field]) if cfg.answer_field in row else dict(row) for row in rows]
    grades_flat = []
    with tqdm(total=len(flat), desc=f"score {cfg.task}", unit="resp", file=sys.stderr) as bar:
        for start in range(0, len(flat), cfg.batch_size):
            chunk = flat[start : start + cfg.batch_size]
            grades_flat += task.grade_many([examples[i] for i, _ in chunk], [r for _, r in chunk])
            bar.update(len(chunk))
    grades: list[list] = [[] for _ in rows]
    for (i, _), g in zip(flat, grades_flat):
        grades[i].append(g)
    has_lengths = all(isinstance(row.get(cfg.length_field), list) for row in rows)
    lengths = [row[cfg.length_field] for row in rows] if has_lengths else None
    if cfg.output:
        _write_graded(Path(cfg.output), rows, grades)
    metrics = summarize(grades, lengths)
    result = {**metrics, "skipped": skipped, "source": cfg.responses, "task": cfg.task}
    level = sandbox_level(task)
    if level:
        result["sandbox_level"] = level
        print(f"code sandbox: level {level!r}", file=sys.stderr)
    if cfg.output:
        result["output"] = cfg.output
    print(json.dumps(result))
    return result


def sandbox_level(task) -> str | None:
    """The containment level the code sandbox reached, for a code task or a mixture holding one."""
    members = getattr(task, "members", {"": task})
    for t in members.values():
        if getattr(t, "_sandbox", None) is not None:
            return t._sandbox.level
    return None


def _write_graded(path: Path, rows: list[dict], grades: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row, gs in zip(rows, grades):
            out = dict(row)
            out["correct"] = [g.correct for g in gs]
            out["extracted"] = [g.extracted for g in gs]
            out["format_ok"] = [g.format_ok for g in gs]
            if any(g.error for g in gs):
                out["grader_errors"] = [g.error for g in gs]
            line = json.dumps(out, ensure_ascii=False)
            if not line.isascii():
                try:
                    line.encode("utf-8")
                except UnicodeEncodeError:  # lone surrogates (valid JSON escapes): keep them escaped
                    line = json.dumps(out)
            fh.write(line + "\n")
