"""MATH (competition mathematics): LaTeX answers checked by math-verify symbolic equivalence.

Examples come from a local JSONL/JSON/Parquet file or directory, or the hub (default
``HuggingFaceH4/MATH-500``, fields ``problem``/``answer``)::

    get_task("math", data="../shared/data/math500")          # ../shared/data/math500/test.jsonl
    get_task("math", data="hendrycks/competition_math", answer_field="solution")

Each example: ``id`` (``unique_id`` when present), ``question``, ``answer`` (gold LaTeX; when the
answer field holds a whole solution, its last ``\\boxed{}``), and the other source fields.

Grading: ``extract`` takes the last ``\\boxed{}`` first (then ``<answer>``, "the answer is", a
final "A:" line, ``####``, the last number) and cleans the LaTeX lightly for majority voting;
``check`` is ``math_equal`` (fast string/number path, else math-verify in a worker process
with a hard per-answer timeout; see ``r1lab.rewards.math_equiv``). ``grade_many`` sends a
whole batch to the worker in one request, so scoring 500 answers takes seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from r1lab.data import load_qa
from r1lab.rewards.extract import check_methods, extract_answer, find_boxed
from r1lab.rewards.format import parse_response
from r1lab.rewards.math_equiv import judge_many, math_equal, normalize_latex
from r1lab.tasks.base import Grade, Task, TaskOptions

log = logging.getLogger("r1lab.tasks")
MATH_METHODS = ("boxed", "answer_tag", "answer_is", "final_a_line", "hashes", "last_number")


@dataclass
class MathOptions(TaskOptions):
    data: str = field(
        default="HuggingFaceH4/MATH-500",
        metadata={"help": "local .jsonl/.json/.parquet file or folder, or hub id[:config]"},
    )
    split: str = field(default="test", metadata={"help": "split used when examples() gets none"})
    question_field: str = field(default="problem", metadata={"help": "source field of the problem"})
    answer_field: str = field(
        default="answer",
        metadata={"help": "source field of the gold answer (a solution's last \\boxed{} is used)"},
    )
    skip_bad: bool = field(default=False, metadata={"help": "skip (and count) bad rows instead of failing"})
    limit: int = field(default=0, metadata={"help": "use only the first N examples (0: all)"})
    extract_methods: tuple[str, ...] = field(
        default=MATH_METHODS, metadata={"help": "answer extraction methods, tried in order"}
    )
    grader_timeout: float = field(default=5.0, metadata={"help": "seconds per math-verify comparison"})


def gold_answer(text: Any) -> str:
    """The gold answer: the text itself, or the last ``\\boxed{}`` of a worked solution."""
    s = "" if text is None else str(text)
    if "\\boxed" in s or "\\fbox" in s:
        s = find_boxed(s) or s
    return s.strip()


class Math(Task):
    name = "math"
    default_template = "r1"

    def __init__(self, options: MathOptions | None = None, **kwargs: Any):
        super().__init__(options or MathOptions(), **kwargs)
        self.options.extract_methods = check_methods(self.options.extract_methods)
        if not float(self.options.grader_timeout) > 0:
            raise ValueError(f"grader_timeout must be > 0 seconds, got {self.options.grader_timeout!r}")
        self.skipped = 0  # bad rows skipped by the last examples() call

    def examples(self, split: str | None = None) -> list[dict]:
        o = self.options
        split = split or o.split
        rows, self.skipped = load_qa(
            o.data, split, o.question_field, o.answer_field, o.skip_bad, o.limit, "math"
        )
        if self.skipped:
            log.warning("math: skipped %d bad rows of %s", self.skipped, o.data)
        for row in rows:
            row["answer"] = gold_answer(row["answer"])
        return rows

    def question(self, example: dict) -> str:
        return str(example["question"])

    def demonstration(self, example: dict, rng: Any) -> str | None:
        """The row's own worked ``solution`` (MATH's training split has one), then its boxed
        answer in the answer tags; None for rows without a solution (MATH-500's answers only)."""
        solution = str(example.get("solution") or "").strip()
        if not solution or not example.get("answer"):
            return None
        opening = "" if self.prompt_opens_think() else "<think>\n"
        return f"{opening}{solution}\n</think>\n<answer>{example['answer']}</answer>"

    def extract(self, completion: str) -> str | None:
        raw = extract_answer(completion, self.options.extract_methods)
        return (normalize_latex(raw) or None) if raw is not None else None

    def check(self, example: dict, answer: str) -> bool:
        return math_equal(answer, gold_answer(example.get("answer")), self.options.grader_timeout)

    def grade(self, example: dict, completion: str) -> Grade:
        return self.grade_many([example], [completion])[0]

    def grade_many(self, examples: list[dict], completions: list[str]) -> list[Grade]:
        """Grade a batch with one math-verify round trip; timeouts land in ``Grade.error``."""
        if len(examples) != len(completions):
            raise ValueError(f"grade_many: {len(examples)} examples but {len(completions)} completions")
        opens = self.prompt_opens_think()
        grades: list[Grade] = []
        pairs: list[tuple[str, str]] = []
        where: list[int] = []
        for example, completion in zip(examples, completions):
            text = (
                completion if isinstance(completion, str) else ("" if completion is None else str(completion))
            )
            fmt = parse_response(text, opens).format_ok
            try:
                answer, error = self.extract(text), None
            except Exception as exc:  # a grader bug must not kill a run; it is reported
                answer, error = None, f"{type(exc).__name__}: {exc}"
            grades.append(Grade(correct=False, format_ok=fmt, extracted=answer, error=error))
            if answer is not None:
                pairs.append((answer, gold_answer(example.get("answer"))))
                where.append(len(grades) - 1)
        try:
            results = judge_many(pairs, self.options.grader_timeout)
        except Exception as exc:
            results = [(False, f"{type(exc).__name__}: {exc}")] * len(pairs)
        for i, (ok, err) in zip(where, results):
            grades[i].correct, grades[i].error = bool(ok), err
        return grades
