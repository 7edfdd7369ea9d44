"""Arithmetic: evaluate a multi-step integer expression, with a worked solution.

Prompt (short template): ``Compute 3+4*2-5.\\n<think>``
Completion:             ``4*2=8 3+8=11 11-5=6</think><answer>6</answer>``

The worked solution does the multiplications first, then the rest left to right, one binary
operation per step: the same step format as Countdown's checks, so both tasks teach the tiny
model the arithmetic it needs. Splits partition the expression space by hash, as in Countdown.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field

from r1lab.tasks.base import Task, TaskOptions, with_languages

QUESTION = {"en": "Compute {expr}.", "zh": "计算 {expr}。"}
_INT_RE = re.compile(r"^[+-]?\d{1,12}$")


def random_expression(rng: random.Random, n_min: int = 3, n_max: int = 4) -> tuple[list[int], list[str]]:
    n = rng.randint(n_min, n_max)
    nums = [rng.randint(1, 9) for _ in range(n)]
    ops = [rng.choice("+-*") for _ in range(n - 1)]
    return nums, ops


def render(nums: list[int], ops: list[str]) -> str:
    return "".join(f"{a}{o}" for a, o in zip(nums, ops)) + str(nums[-1])


def worked_steps(nums: list[int], ops: list[str]) -> tuple[list[str], int]:
    """Steps ``a*b=c`` (multiplications first, then left to right) and the value."""
    nums, ops, steps = list(nums), list(ops), []
    while "*" in ops:
        i = ops.index("*")
        v = nums[i] * nums[i + 1]
        steps.append(f"{nums[i]}*{nums[i + 1]}={v}")
        nums[i : i + 2] = [v]
        ops.pop(i)
    while ops:
        a, o, b = nums[0], ops.pop(0), nums[1]
        v = a + b if o == "+" else a - b
        steps.append(f"{a}{o}{b}={v}")
        nums[0:2] = [v]
    return steps, nums[0]


def split_of(expr: str, test_share: float = 0.1) -> str:
    h = int(hashlib.sha256(expr.encode()).hexdigest()[:8], 16)
    return "test" if (h % 1000) < test_share * 1000 else "train"


def worked_solution(nums: list[int], ops: list[str]) -> str:
    steps, value = worked_steps(nums, ops)
    return " ".join(steps) + f"</think><answer>{value}</answer>"


@dataclass
class ArithmeticOptions(TaskOptions):
    template: str = field(default="short", metadata={"help": "prompt template"})
    test_size: int = 400
    train_size: int = 20000
    seed: int = 1234


class Arithmetic(Task):
    name = "arithmetic"
    languages = tuple(QUESTION)
    default_template = "short"

    def __init__(self, options: ArithmeticOptions | None = None, **kwargs):
        super().__init__(options or ArithmeticOptions(), **kwargs)

    def examples(self, split: str) -> list[dict]:
        if split not in ("train", "test"):
            raise ValueError(f"arithmetic has splits 'train' and 'test', not {split!r}")
        o = self.options
        rng = random.Random(f"arithmetic-{split}-{o.seed}")
        n = o.test_size if split == "test" else o.train_size
        rows, seen = [], set()
        while len(rows) < n:
            nums, ops = random_expression(rng)
            expr = render(nums, ops)
            if split_of(expr) != split or (split == "test" and expr in seen):
                continue
            seen.add(expr)
            _, value = worked_steps(nums, ops)
            rows.append({"id": f"{split}-{len(rows)}", "expression": expr, "answer": str(value)})
        return with_languages(rows, o.language)

    def question(self, example: dict) -> str:
        return QUESTION[self.language_of(example)].format(expr=example["expression"])

    def extract(self, completion: str) -> str | None:
        return self.tagged_answer(completion)

    def demonstration(self, example: dict, rng: random.Random) -> str | None:
        """Step-by-step evaluation of the expression (always right)."""
        parts = re.findall(r"\d+|[+*-]", example["expression"])
        return worked_solution([int(x) for x in parts[::2]], parts[1::2])

    def check(self, example: dict, answer: str) -> bool:
        return bool(_INT_RE.match(answer)) and int(answer) == int(example["answer"])
