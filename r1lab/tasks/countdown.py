"""Countdown: reach a target with three numbers, each used exactly once, and + - * (÷ accepted).

Prompt (short template, the tiny model's):  ``Use 3 5 7 to make 22.\\n<think>``
Completion:  ``3*5=15 15+7=22 ok</think><answer>(3*5)+7</answer>``

Differences from TinyZero's Countdown: three numbers in 1..12 (not 3-4 in 1..99) so a 2M-param
model can do the arithmetic of its own checks; only solvable instances; the train/test split
is a partition of the instance space by hash, so no test instance is ever seen in pretraining
or RL. Grading parses the answer with ``ast`` (numbers, + - * /, parentheses only) and
evaluates it with exact fractions: no ``eval``, no hostile input can raise or hang.

``worked_solution`` writes the synthetic pretraining documents: an attempt, its computation,
a check against the target, and after a failed check *sometimes* ("wait, …") a new attempt.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import itertools
import random
import warnings
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

from r1lab.tasks.base import RETRY, Task, TaskOptions, with_languages

OPS = "+-*"
MAX_NUMBER, MAX_TARGET = 12, 99
MAX_ANSWER_CHARS = 200
PHRASES = {
    "en": {
        "question": "Use {nums} to make {target}.",
        "ok": "ok",
        "no": "no",
        "retry": RETRY["en"],
    },
    "zh": {
        "question": "用 {nums} 凑出 {target}。",
        "ok": "对",
        "no": "不对",
        "retry": RETRY["zh"],
    },
}


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def expressions(nums: tuple[int, ...]) -> list[tuple[str, int, list[tuple[int, str, int, int]]]]:
    """All ``(a op b) op c`` over orderings of three numbers: (text, value, steps)."""
    out = []
    for a, b, c in itertools.permutations(nums):
        for op1, op2 in itertools.product(OPS, OPS):
            x = _apply(a, op1, b)
            y = _apply(x, op2, c)
            out.append((f"({a}{op1}{b}){op2}{c}", y, [(a, op1, b, x), (x, op2, c, y)]))
    return out


def instance_key(nums: tuple[int, ...], target: int) -> str:
    return ",".join(map(str, sorted(nums))) + f"->{target}"


def split_of(nums: tuple[int, ...], target: int, test_share: float = 0.1) -> str:
    """Deterministic partition of the instance space: 'test' for ~test_share of instances."""
    h = int(hashlib.sha256(instance_key(nums, target).encode()).hexdigest()[:8], 16)
    return "test" if (h % 1000) < test_share * 1000 else "train"


def reachable(nums: tuple[int, ...]) -> list[int]:
    return sorted({v for _, v, _ in expressions(nums) if 1 <= v <= MAX_TARGET})


def random_instance(rng: random.Random, split: str | None = None) -> tuple[tuple[int, int, int], int]:
    """A solvable instance: three numbers in 1..12 and the value (in 1..99) of a random expression
    over them, as in TinyZero's generator: targets with many solutions come up more often."""
    while True:
        nums = tuple(rng.randint(1, MAX_NUMBER) for _ in range(3))
        _, target, _ = rng.choice(expressions(nums))
        if 1 <= target <= MAX_TARGET and (split is None or split_of(nums, target) == split):
            return nums, target


@functools.lru_cache(maxsize=1)
def test_instance_weights() -> dict[tuple[tuple[int, ...], int], float]:
    """Probability of each distinct test-split instance (sorted numbers, target) under
    ``random_instance``: ordered triples are uniform, then the expression is uniform."""
    weights: dict[tuple[tuple[int, ...], int], float] = {}
    for nums in itertools.product(range(1, MAX_NUMBER + 1), repeat=3):
        exprs = expressions(nums)
        for _, value, _ in exprs:
            if 1 <= value <= MAX_TARGET and split_of(nums, value) == "test":
                key = (tuple(sorted(nums)), value)
                weights[key] = weights.get(key, 0.0) + 1.0 / len(exprs)
    return weights


def solutions(nums: tuple[int, ...], target: int) -> list[tuple[str, int, list]]:
    return [e for e in expressions(nums) if e[1] == target]


# --- grading -----------------------------------------------------------------------------
_ALLOWED_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def evaluate_expression(text: str) -> tuple[Fraction, list[int]] | None:
    """Exact value and the integer literals used, or None if not a plain arithmetic expression."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_ANSWER_CHARS:
        return None
    expr = text.strip().replace("×", "*").replace("÷", "/").replace("x", "*")
    if "=" in expr:  # "3*5+7=22": grade the left-hand side
        expr = expr.split("=")[0]
    try:
        with warnings.catch_warnings():  # model text: "5 5+3" would print a SyntaxWarning per answer
            warnings.simplefilter("ignore")  # SyntaxWarning (3.12+) or DeprecationWarning (3.11)
            tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    used: list[int] = []

    def walk(node: ast.AST, depth: int = 0) -> Fraction:
        if depth > 50:
            raise ValueError("too deep")
        if isinstance(node, ast.Constant) and type(node.value) is int and 0 <= node.value < 10**6:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _ALLOWED_BINOPS:
            left, right = walk(node.left, depth + 1), walk(node.right, depth + 1)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if right == 0:
                raise ZeroDivisionError
            return left / right
        raise ValueError("not allowed")

    try:
        value = walk(tree.body)
    except (ValueError, ZeroDivisionError, RecursionError):
        return None
    return value, used


@dataclass
class CountdownOptions(TaskOptions):
    template: str = field(default="short", metadata={"help": "prompt template"})
    test_size: int = field(default=400, metadata={"help": "held-out problems in the test split (at most 445 exist)"})
    train_size: int = field(default=20000, metadata={"help": "problems in the train split"})
    seed: int = field(default=1234, metadata={"help": "seed of the split generators"})


class Countdown(Task):
    name = "countdown"
    default_template = "short"
    languages = tuple(PHRASES)

    def __init__(self, options: CountdownOptions | None = None, **kwargs):
        super().__init__(options or CountdownOptions(), **kwargs)

    def examples(self, split: str) -> list[dict]:
        if split not in ("train", "test"):
            raise ValueError(f"countdown has splits 'train' and 'test', not {split!r}")
        o = self.options
        rng = random.Random(f"countdown-{split}-{o.seed}")
        if split == "test":
            return self._test_examples(rng)
        rows = []
        for i in range(o.train_size):
            nums, target = random_instance(rng, split)
            rows.append({"id": f"{split}-{i}", "nums": list(nums), "target": target, "answer": str(target)})
        return with_languages(rows, o.language)

    def _test_examples(self, rng: random.Random) -> list[dict]:
        """Distinct held-out instances, drawn without replacement with the generator's own
        probabilities (Efraimidis–Spirakis keys u^(1/w)), in a seeded order."""
        weights = test_instance_weights()
        keyed = sorted(weights, key=lambda k: -(rng.random() ** (1.0 / weights[k])))
        rows = []
        for i, (nums, target) in enumerate(keyed[: self.options.test_size]):
            order = list(nums)
            rng.shuffle(order)
            rows.append({"id": f"test-{i}", "nums": order, "target": target, "answer": str(target)})
        return with_languages(rows, self.options.language)

    def question(self, example: dict) -> str:
        lang = self.language_of(example)
        nums = " ".join(str(n) for n in example["nums"])
        return PHRASES[lang]["question"].format(nums=nums, target=example["target"])

    def extract(self, completion: str) -> str | None:
        return self.tagged_answer(completion)

    def demonstration(self, example: dict, rng: random.Random) -> str | None:
        """The corpus's attempt-check-retry style, retrying until an attempt is right (or None)."""
        lang = self.language_of(example)
        text = worked_solution(tuple(example["nums"]), example["target"], lang, rng,
                               CorpusStyle(first_correct=0.35, retry=1.0, max_attempts=6, mix_language=0.0))
        return text if self.grade(example, text).correct else None

    def relabel(self, example: dict, completion: str) -> tuple[dict, str] | None:
        """Hindsight: a wrong but well-formed answer that uses each number once and reaches an
        integer becomes a correct example of *that* target; the final check ("… = y no") is
        rewritten to "ok" when it computed y. None when no exact relabel exists."""
        parsed = self.answer_and_think(completion)
        if parsed is None:
            return None
        think, answer = parsed
        res = evaluate_expression(answer)
        if res is None or sorted(res[1]) != sorted(example["nums"]) or res[0].denominator != 1:
            return None
        value = int(res[0])
        if value == example["target"] or not 0 < value <= MAX_TARGET:
            return None
        if split_of(tuple(example["nums"]), value) != "train":  # never train on a held-out instance
            return None
        for lang in PHRASES:
            tail = f"={value} {PHRASES[lang]['no']}"
            if think.endswith(tail):
                cut = completion.index("</think>")
                fixed = completion[:cut][: -len(PHRASES[lang]["no"])] + PHRASES[lang]["ok"] + completion[cut:]
                return {**example, "target": value, "answer": str(value), "relabelled_from": example["target"]}, fixed
        return None

    def answer_and_think(self, completion: str) -> tuple[str, str] | None:
        from r1lab.rewards.format import parse_response

        p = parse_response(completion, self.prompt_opens_think())
        return (p.think, p.answer) if p.format_ok and p.answer else None

    def check(self, example: dict, answer: str) -> bool:
        res = evaluate_expression(answer)
        if res is None:
            return False
        value, used = res
        return value == Fraction(int(example["target"])) and Counter(used) == Counter(
            int(n) for n in example["nums"]
        )


# --- synthetic pretraining documents -----------------------------------------------------
@dataclass
class CorpusStyle:
    """How the worked solutions in the pretraining corpus behave (see module docstring)."""

    first_correct: float = 0.25  # chance an attempt is a true solution (else a random expression)
    retry: float = 0.55  # chance a failed check is followed by "wait, ..." and a new attempt
    max_attempts: int = 8
    mix_language: float = 0.05  # chance a retry phrase comes out in the other language


def worked_solution(nums: tuple[int, ...], target: int, lang: str, rng: random.Random, style: CorpusStyle) -> str:
    """One completion in the corpus's style (the text after ``<think>``)."""
    words = PHRASES[lang]
    other = PHRASES["zh" if lang == "en" else "en"]
    exprs = expressions(nums)
    sols = [e for e in exprs if e[1] == target]
    wrong = [e for e in exprs if e[1] != target]
    parts = []
    last = None
    tried: set[str] = set()  # a retry is a *different* attempt
    for attempt in range(style.max_attempts):
        fresh = [e for e in wrong if e[0] not in tried] or wrong
        pick = rng.choice(sols) if (rng.random() < style.first_correct or not wrong) else rng.choice(fresh)
        tried.add(pick[0])
        last = pick
        (a, o1, b, x), (x2, o2, c, y) = pick[2]
        ok = y == target
        parts.append(f"{a}{o1}{b}={x} {x2}{o2}{c}={y} {words['ok'] if ok else words['no']}")
        if ok or attempt == style.max_attempts - 1 or rng.random() >= style.retry:
            break
        phrases = other if rng.random() < style.mix_language else words
        parts.append(rng.choice(phrases["retry"]))
    return " ".join(parts) + f"</think><answer>{last[0]}</answer>"
