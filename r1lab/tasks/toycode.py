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
writes the corpus's think-then-answer text: an attempt, its value on the example computed one
small operation at a time and compared with the example's output, ok or no (with "too big" /
"too small" when the value is monotone in the constant), and after a "no" another attempt only
sometimes, on the side the comparison points to.

Why step by step (base v6): base v5's traces gave the attempt's value in one jump; the base got
that value right 4.5% of the time, so its "ok"/"no" carried no information, a retry was a fresh
guess, and R1-Zero on toy code learnt to stop retrying (docs/findings.md, session 12).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from r1lab.tasks.base import RETRY

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
        "constants": [k, j],
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
    """How a corpus solution behaves: attempts, each computed on the example step by step and
    compared with the example's output; after a failed check another attempt follows only
    sometimes (else the wrong attempt is answered)."""

    first_correct: float = 0.2  # chance an attempt is the solution (else another constant)
    retry: float = 0.5  # chance a failed check is followed by "wait, ..." and a new attempt
    max_attempts: int = 4


def steps(family: Family, v: Value, k: int, j: int) -> str:
    """f(v) under constants (k, j), computed the way the corpus writes Countdown: one small
    operation at a time (``12*5=60 60+2=62``; a list summed item by item), so that a model can
    learn to get the value right and its check means something. Only the corpus's own constants
    and inputs are evaluated here, never model text."""
    name, r = family.name, family.ref(v, k, j)
    if name == "affine":
        return f"{v}*{k}={v * k} {v * k}+{j}={r}"
    if name == "sub_mul":
        return f"{v}-{k}={v - k} {v - k}*{j}={r}"
    if name == "square_plus":
        return f"{v}*{v}={v * v} {v * v}+{k}={r}"
    if name == "modulo":
        return f"{v}%{k}={r}"
    if name == "clamp_low":
        return f"max({v}, {k})={r}"
    if name == "sum_list":
        out, total = [], v[0]
        for item in [*v[1:], k]:
            out.append(f"{total}+{item}={total + item}")
            total += item
        return " ".join(out)
    if name in ("max_list", "min_list", "len_list"):
        fn, op = {"max_list": (max, "*"), "min_list": (min, "+"), "len_list": (len, "*")}[name]
        m = fn(v)
        return f"{fn.__name__}(xs)={m} {m}{op}{k}={r}"
    if name == "count_gt":
        return f">{k}: {' '.join(str(i) for i in v if i > k)} = {r}".replace(":  =", ": =")
    if name == "range_sum":
        return f"{k}+...+{v}={r}" if v - k > 3 else "+".join(str(i) for i in range(k, v + 1)) + f"={r}"
    if name == "reverse_repeat":
        return f"{v!r}[::-1]={v[::-1]!r} {v[::-1]!r}*{k}={r!r}"
    if name == "count_char":
        return f"{v!r}.count({'abcdefgh'[k]!r})={r}"
    return f"{v.upper()!r}+{'abcdefgh'[k]!r}={r!r}"  # upper_plus


def direction(family: Family, v: Value, j: int) -> int:
    """+1 when f(v) never falls as k grows over the family's range, -1 when it never rises,
    0 otherwise (or for non-numbers): which side of k a too-big value points to."""
    values = [family.ref(v, k, j) for k in family.consts[0]]
    if not all(isinstance(x, int) for x in values):
        return 0
    rising = all(a <= b for a, b in zip(values, values[1:]))
    falling = all(a >= b for a, b in zip(values, values[1:]))
    return 1 if rising and not falling else -1 if falling and not rising else 0


def wrong_constants(row: dict) -> list[tuple[int, int]]:
    """Constants of wrong attempts: the family's other k (when k is unnamed), else k or j one off
    (within the family's ranges)."""
    f = BY_NAME[row["family"]]
    k, j = row["constants"]
    if row.get("hidden_constant"):
        return [(other, j) for other in f.consts[0] if other != k]
    out = [(k + d, j) for d in (-1, 1) if k + d in f.consts[0]]
    if len(f.consts) > 1:
        out += [(k, j + d) for d in (-1, 1) if j + d in f.consts[1]]
    return out


WORDS = {"en": {"ok": "ok", "no": "no", "big": "too big", "small": "too small"},
         "zh": {"ok": "对", "no": "不对", "big": "太大", "small": "太小"}}


def worked_solution(row: dict, rng: random.Random, lang: str = "en", style: CodeStyle | None = None) -> str:
    """The text after ``<think>``: attempts, each computed on the example step by step and
    compared with the example's output (`` `return x * 5 + 2`: 12*5=60 60+2=62 > 50 no, too
    big`` for f(12) = 50; the code in backticks as a model writes it), then the fenced function of the
    last attempt. When the family's value is monotone in the unnamed constant on the example, a
    "too big"/"too small" points the next attempt to the right side of the last one (so retries
    search, as a person would); otherwise the next attempt is any untried constant."""
    style = style or CodeStyle()
    f, words = BY_NAME[row["family"]], WORDS[lang]
    right, (k, j) = row["canonical_solution"].strip(), row["constants"]
    want, x = row["example_output"], row["example_input"]
    sign = direction(f, x, j) if row.get("hidden_constant") else 0
    left = wrong_constants(row)
    rng.shuffle(left)
    parts, body = [], right
    for attempt in range(style.max_attempts):
        pick = (k, j) if (rng.random() < style.first_correct or not left) else left.pop()
        body = f"return {_fill(f.body, *pick)}"
        got = f.ref(x, *pick)
        good = got == want
        compare = f" {'>' if got > want else '<'} {want}" if isinstance(got, int) and not good else ""
        verdict = words["ok"] if good else words["no"]
        if not good and sign:
            verdict += ", " + words["big" if got > want else "small"]
            # the answer's side: bigger constants when too small on a rising family, and so on
            up = (got < want) == (sign > 0)
            left = [c for c in left if (c[0] > pick[0]) == up]
        parts.append(f"`{body}`: {steps(f, x, *pick)}{compare} {verdict}")
        if good or attempt == style.max_attempts - 1 or rng.random() >= style.retry:
            break
        parts.append(rng.choice(RETRY[lang]))
    return " ".join(parts) + code_answer(row, body)


def code_answer(row: dict, body: str | None = None) -> str:
    """``</think><answer>`` + the fenced function (the row's own body unless given) + ``</answer>``."""
    body = body if body is not None else row["canonical_solution"].strip()
    code = row["prompt"].split("\n")[0] + "\n    " + body
    return f"</think><answer>\n```python\n{code}\n```\n</answer>"
