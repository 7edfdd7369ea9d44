"""A procedural family of toy coding problems that a tiny model can learn, as HumanEval-style rows.

    rows = toy_problems("train", seed=0)       # [{prompt, test, entry_point, canonical_solution, spec, ...}]

Each problem is a one-line spec in English or Chinese for a function ``f`` of one argument from
a small grammar of families (affine and quadratic maps of an int, sums/maxima/counts over a list,
string reversal/upper-casing/letter counts, clamps, ranges) with one constant left unnamed and
fixed by an example: "Write f(x) that returns x times k plus 4, where f(3) = 13." (k = 3). The
example is drawn so that exactly one constant of the family's range fits it (when no such input
turns up, the constant is spelled out instead), so a solution that passes it is the solution;
4 hidden tests on other inputs grade it. Rows are in HumanEval's form (``prompt`` = the signature
with the spec as docstring, ``test`` = ``def check(candidate): ...``, ``entry_point``,
``canonical_solution`` = the body), so the code task grades them with the same path as HumanEval.

Why the unnamed constant: with every constant spelled out, the shipped base copied it and
solved 64% of held-out problems before any RL (target 5–50%). Finding the constant from the
example is the Countdown pattern — attempt, compute f(example), compare, retry — the lever
R1-Zero's RL pulls.

Train/test: problems are partitioned by a hash of (family, constants) — the same rule as
Countdown, a quarter held out — so held-out problems are never trained on. ``worked_solution``
writes the corpus's think-then-answer text: an attempt, its value on the example, ok or no, and
after a "no" another attempt only sometimes.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Value = Any


@dataclass(frozen=True)
class Family:
    name: str
    arg: str  # the argument's name: x (int), n (int >= 0), xs (list of ints), s (str)
    spec_en: str  # with {k} (and {j}) for the constants
    spec_zh: str
    body: str  # the return expression, with {k}/{j}
    ref: Callable[..., Value]  # reference: ref(arg, k, j)
    consts: tuple[range, ...]  # ranges of k (and j)
    hide: bool = True  # k is left unnamed and fixed by the example (False: spelled out)


FAMILIES = (
    Family("affine", "x", "returns x times {k} plus {j}", "返回x乘{k}加{j}", "x * {k} + {j}",
           lambda x, k, j: x * k + j, (range(2, 13), range(0, 31))),
    Family("sub_mul", "x", "returns x minus {k}, times {j}", "返回x减{k}再乘{j}", "(x - {k}) * {j}",
           lambda x, k, j: (x - k) * j, (range(0, 21), range(2, 10))),
    Family("square_plus", "x", "returns x squared plus {k}", "返回x的平方加{k}", "x * x + {k}",
           lambda x, k, j: x * x + k, (range(0, 31),)),
    Family("modulo", "x", "returns x modulo {k}", "返回x除以{k}的余数", "x % {k}",
           lambda x, k, j: x % k, (range(2, 21),)),
    Family("clamp_low", "x", "returns x, or {k} if x is smaller than {k}", "返回x，若x小于{k}则返回{k}", "max(x, {k})",
           lambda x, k, j: max(x, k), (range(-10, 31),)),
    Family("sum_list", "xs", "returns the sum of the list xs plus {k}", "返回列表xs的和加{k}", "sum(xs) + {k}",
           lambda xs, k, j: sum(xs) + k, (range(0, 31),)),
    Family("max_list", "xs", "returns the largest item of xs times {k}", "返回xs中最大的数乘{k}", "max(xs) * {k}",
           lambda xs, k, j: max(xs) * k, (range(1, 13),)),
    Family("min_list", "xs", "returns the smallest item of xs plus {k}", "返回xs中最小的数加{k}", "min(xs) + {k}",
           lambda xs, k, j: min(xs) + k, (range(0, 21),)),
    Family("len_list", "xs", "returns the length of xs times {k}", "返回xs的长度乘{k}", "len(xs) * {k}",
           lambda xs, k, j: len(xs) * k, (range(1, 13),)),
    Family("count_gt", "xs", "returns how many items of xs are greater than {k}", "返回xs中大于{k}的数的个数",
           "len([v for v in xs if v > {k}])", lambda xs, k, j: len([v for v in xs if v > k]), (range(0, 16),)),
    Family("range_sum", "n", "returns the sum of the numbers from {k} to n", "返回从{k}到n的所有数之和",
           "sum(range({k}, n + 1))", lambda n, k, j: sum(range(k, n + 1)), (range(0, 10),)),
    Family("reverse_repeat", "s", "returns s reversed, {k} times", "返回s倒过来重复{k}次", "s[::-1] * {k}",
           lambda s, k, j: s[::-1] * k, (range(1, 5),)),
    Family("count_char", "s", "returns how many times the letter {c} appears in s", "返回字母{c}在s中出现的次数",
           "s.count('{c}')", lambda s, k, j: s.count("abcdefgh"[k]), (range(0, 8),), hide=False),
    Family("upper_plus", "s", "returns s in capitals followed by the letter {c}", "返回s的大写再加上字母{c}", "s.upper() + '{c}'",
           lambda s, k, j: s.upper() + "abcdefgh"[k], (range(0, 8),)),
)
BY_NAME = {f.name: f for f in FAMILIES}
TEST_SHARE = 0.25


def _fill(text: str, k: int | None, j: int) -> str:
    """The text with its constants; ``k=None`` leaves k unnamed ("k", or "c" for a letter)."""
    if k is None:
        return text.format(k="k", j=j, c="c")
    return text.format(k=k, j=j, c="abcdefgh"[k] if 0 <= k < 8 else "")


def instances() -> list[tuple[str, int, int]]:
    """Every (family, k, j) of the grammar (a few hundred)."""
    out = []
    for f in FAMILIES:
        js = f.consts[1] if len(f.consts) > 1 else range(1)
        out += [(f.name, k, j) for k in f.consts[0] for j in js]
    return out


def split_of(name: str, k: int, j: int) -> str:
    h = int(hashlib.sha256(f"toycode-{name}-{k}-{j}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < TEST_SHARE else "train"


def random_input(rng: random.Random, arg: str) -> Value:
    if arg == "x":
        return rng.randint(-9, 20)
    if arg == "n":
        return rng.randint(5, 15)
    if arg == "xs":
        return [rng.randint(-5, 15) for _ in range(rng.randint(1, 5))]
    return "".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 6)))


def example_for(f: Family, k: int, j: int, rng: random.Random, tries: int = 200) -> Value | None:
    """An input whose output only k (of the family's range of k) gives, or None if none is found."""
    for _ in range(tries):
        v = random_input(rng, f.arg)
        out = f.ref(v, k, j)
        if all(f.ref(v, other, j) != out for other in f.consts[0] if other != k):
            return v
    return None


def problem(name: str, k: int, j: int, rng: random.Random, lang: str = "en") -> dict:
    """One HumanEval-style row: the spec with its example, 4 hidden tests on inputs from ``rng``."""
    f = BY_NAME[name]
    example = example_for(f, k, j, rng) if f.hide else None
    hidden = example is not None
    if example is None:
        example = random_input(rng, f.arg)
    spec = _fill(f.spec_en if lang == "en" else f.spec_zh, None if hidden else k, j)
    given = f"f({example!r}) = {f.ref(example, k, j)!r}"
    spec += (", where " if lang == "en" else "，其中") + given
    inputs: list[Value] = []
    while len(inputs) < 4:
        v = random_input(rng, f.arg)
        if v not in inputs:
            inputs.append(v)
    checks = "".join(f"    assert candidate({v!r}) == {f.ref(v, k, j)!r}\n" for v in inputs)
    question = (f"Write a Python function f({f.arg}) that {spec}." if lang == "en"
                else f"写一个Python函数f({f.arg})，{spec}。")
    return {
        "id": f"toy-{name}-{k}-{j}",
        "family": name,
        "spec": question,
        "prompt": f'def f({f.arg}):\n    """{spec}"""\n',
        "test": "def check(candidate):\n" + checks,
        "entry_point": "f",
        "canonical_solution": f"    return {_fill(f.body, k, j)}\n",
        "hidden_constant": hidden,
        "example_input": example,
        "example_output": f.ref(example, k, j),
    }


def toy_problems(split: str, seed: int = 0, lang: str = "en") -> list[dict]:
    """Every problem of ``split`` in a seeded order, each with its own hidden tests."""
    if split not in ("train", "test"):
        raise ValueError(f"toy code has splits 'train' and 'test', not {split!r}")
    rng = random.Random(f"toycode-{split}-{seed}-{lang}")
    rows = [problem(n, k, j, rng, lang) for n, k, j in instances() if split_of(n, k, j) == split]
    rng.shuffle(rows)
    return rows


@dataclass(frozen=True)
class CodeStyle:
    """How a corpus solution behaves: attempts, each computed on the example and checked; after
    a failed check another attempt follows only sometimes (else the wrong attempt is answered)."""

    first_correct: float = 0.2  # chance an attempt is the solution (else another constant)
    retry: float = 0.5  # chance a failed check is followed by "wait, ..." and a new attempt
    max_attempts: int = 4


RETRY = {"en": ["wait, let me try again.", "wait, that is wrong."], "zh": ["等等，再试一次。", "等等，这不对。"]}


def perturb(body: str, rng: random.Random) -> str:
    """The body with one integer constant off by one (or an operator swapped when there is none)."""
    nums = list(re.finditer(r"(?<![\w.])\d+", body))
    if nums:
        m = rng.choice(nums)
        value = int(m.group()) + rng.choice((-1, 1)) if int(m.group()) > 0 else 1
        return body[: m.start()] + str(value) + body[m.end():]
    return body.replace(" + ", " - ", 1) if " + " in body else body + " + 1"


def wrong_bodies(row: dict) -> list[str]:
    """Attempts that differ from the solution: the family with another k (when k is unnamed), else
    the body with a constant off by one or an operator swapped."""
    f = BY_NAME[row["family"]]
    k, j = (int(v) for v in row["id"].split("-")[-2:])
    right = row["canonical_solution"].strip()
    if row.get("hidden_constant"):
        return [f"return {_fill(f.body, other, j)}" for other in f.consts[0] if other != k]
    return sorted({b for b in (perturb(right, random.Random(i)) for i in range(8)) if b != right})


def run_body(row: dict, body: str) -> Value:
    """f(example) under the attempt ``body`` (a ``return ...`` line), or None when it raises."""
    f = BY_NAME[row["family"]]
    try:
        return eval(body.removeprefix("return "), {"__builtins__": {"sum": sum, "max": max, "min": min, "len": len,
                                                                    "range": range}}, {f.arg: row["example_input"]})
    except Exception:  # noqa: BLE001 - a wrong attempt may divide by zero
        return None


def worked_solution(row: dict, rng: random.Random, lang: str = "en", style: CodeStyle | None = None) -> str:
    """The text after ``<think>``: attempts, each with its value on the example and ok or no
    (`` `return x * 3 + 4` so f(3) = 13 ok``, the code in backticks as a model writes it), then
    the fenced function of the last attempt.
    Only the corpus's own bodies are evaluated here, never model text."""
    style = style or CodeStyle()
    right = row["canonical_solution"].strip()
    wrong = wrong_bodies(row)
    rng.shuffle(wrong)
    want, x = row["example_output"], row["example_input"]
    so, ok_word, no_word = ("so", "ok", "no") if lang == "en" else ("所以", "对", "不对")
    parts, body = [], right
    for attempt in range(style.max_attempts):
        body = right if (rng.random() < style.first_correct or not wrong) else wrong.pop()
        got = run_body(row, body)
        good = got == want
        parts.append(f"`{body}` {so} f({x!r}) = {got!r} {ok_word if good else no_word}")
        if good or attempt == style.max_attempts - 1 or rng.random() >= style.retry:
            break
        parts.append(rng.choice(RETRY[lang]))
    return " ".join(parts) + code_answer(row, body)


def code_answer(row: dict, body: str | None = None) -> str:
    """``</think><answer>`` + the fenced function (the row's own body unless given) + ``</answer>``."""
    body = body if body is not None else row["canonical_solution"].strip()
    code = row["prompt"].split("\n")[0] + "\n    " + body
    return f"</think><answer>\n```python\n{code}\n```\n</answer>"
