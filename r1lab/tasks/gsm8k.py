"""GSM8K: grade-school word problems; the answer is one number, checked by exact numeric equality.

Examples come from a local JSONL/JSON/Parquet file or directory, or the hub
(``openai/gsm8k:main`` = dataset ``openai/gsm8k``, config ``main``)::

    get_task("gsm8k", data="../shared/data/gsm8k")          # ../shared/data/gsm8k/test.jsonl
    get_task("gsm8k", data="mine.jsonl", question_field="q", answer_field="a")

Each example: ``id``, ``question``, ``answer`` (the gold final number, normalised: the text after
``####`` in GSM8K's worked solution), ``solution`` (the worked solution as given).

Grading: ``extract`` finds the answer (default order: ``<answer>`` tag, ``####``, ``\\boxed{}``,
"the answer is", a final "A:" line, the last number) and normalises it (``$1,234.50`` ->
``1234.5``); ``check`` compares exact values (fractions, no float tolerance). The gold may be
a bare number or a whole ``####`` solution (as in RESPONSES files for ``r1lab score``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from r1lab.data import load_qa
from r1lab.rewards.extract import check_methods, extract_answer, last_number, normalize_number, number_value
from r1lab.tasks.base import Task, TaskOptions

log = logging.getLogger("r1lab.tasks")
GSM8K_METHODS = ("answer_tag", "hashes", "boxed", "answer_is", "final_a_line", "last_number")
MAX_ANSWER_CHARS = 200


@dataclass
class GSM8KOptions(TaskOptions):
    data: str = field(
        default="openai/gsm8k:main",
        metadata={"help": "local .jsonl/.json/.parquet file or folder, or hub id[:config]"},
    )
    split: str = field(default="test", metadata={"help": "split used when examples() gets none"})
    question_field: str = field(default="question", metadata={"help": "source field of the question"})
    answer_field: str = field(default="answer", metadata={"help": "source field of the gold answer"})
    skip_bad: bool = field(default=False, metadata={"help": "skip (and count) bad rows instead of failing"})
    limit: int = field(default=0, metadata={"help": "use only the first N examples (0: all)"})
    extract_methods: tuple[str, ...] = field(
        default=GSM8K_METHODS, metadata={"help": "answer extraction methods, tried in order"}
    )


def gold_answer(text: Any) -> str:
    """The gold final answer from a bare answer or a worked solution ending in ``#### X``."""
    s = "" if text is None else str(text)
    if "####" in s:
        s = s.rsplit("####", 1)[1]
    s = s.strip()
    return normalize_number(s) or s


def normalize_prediction(raw: str | None) -> str | None:
    """An extracted answer as a canonical number; non-numeric answers stay text (never correct)."""
    if raw is None:
        return None
    num = normalize_number(raw) or normalize_number(last_number(raw) or "")
    return num if num is not None else (raw.strip()[:MAX_ANSWER_CHARS] or None)


class GSM8K(Task):
    name = "gsm8k"
    default_template = "r1"

    def __init__(self, options: GSM8KOptions | None = None, **kwargs: Any):
        super().__init__(options or GSM8KOptions(), **kwargs)
        self.options.extract_methods = check_methods(self.options.extract_methods)
        self.skipped = 0  # bad rows skipped by the last examples() call

    def examples(self, split: str | None = None) -> list[dict]:
        o = self.options
        split = split or o.split
        rows, self.skipped = load_qa(
            o.data, split, o.question_field, o.answer_field, o.skip_bad, o.limit, "gsm8k"
        )
        if self.skipped:
            log.warning("gsm8k: skipped %d bad rows of %s", self.skipped, o.data)
        for row in rows:
            row["solution"] = row.get("solution", row["answer"])
            row["answer"] = gold_answer(row["answer"])
        return rows

    def question(self, example: dict) -> str:
        return str(example["question"])

    def demonstration(self, example: dict, rng: Any) -> str | None:
        """GSM8K's own worked solution as the reasoning: the human-written rationale before
        ``####`` with its calculator annotations (``<<48/2=24>>``) removed, then the gold answer.
        R1's cold start wanted readable human-style solutions; these are exactly that."""
        rationale = re.sub(r"<<[^>]*>>", "", str(example.get("solution") or "").split("####")[0]).strip()
        if not rationale or example.get("answer") in (None, ""):
            return None
        opening = "" if self.prompt_opens_think() else "<think>\n"
        return f"{opening}{rationale}\n</think>\n<answer>{example['answer']}</answer>"

    def extract(self, completion: str) -> str | None:
        return normalize_prediction(extract_answer(completion, self.options.extract_methods))

    def check(self, example: dict, answer: str) -> bool:
        gold = gold_answer(example.get("answer"))
        pred, want = number_value(answer), number_value(gold)
        if pred is None or want is None:
            return pred is None and want is None and answer.strip() == gold and gold != ""
        return pred == want
