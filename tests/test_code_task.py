"""The code task: extraction, toy problems, HumanEval and MBPP rows graded in the sandbox, `score`."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from r1lab.rewards.sandbox import LEVELS
from r1lab.tasks import get_task
from r1lab.tasks.code import extract_code, program_of
from r1lab.tasks.toycode import (
    BY_NAME,
    FAMILIES,
    CodeStyle,
    direction,
    instances,
    problem,
    split_of,
    steps,
    toy_problems,
    worked_solution,
)

ROOT = Path(__file__).resolve().parents[1]


def fenced(code: str) -> str:
    return f"ok</think><answer>\n```python\n{code}\n```\n</answer>"


def test_extract_code_rules():
    assert extract_code("a ```python\nx = 1\n``` b ```py\ny = 2\n```") == "y = 2"  # the last fenced block
    assert extract_code("t</think><answer>def f(x):\n    return x</answer>") == "def f(x):\n    return x"
    assert extract_code("    return x + 1\n") == "    return x + 1"  # a bare body keeps its indentation
    assert extract_code("```python\nz = 3") == "z = 3"  # an unclosed fence at the end
    assert extract_code("") is None and extract_code("   \n") is None


def test_programs_by_row_form():
    he = {"prompt": "def f(x):\n", "test": "def check(c): pass", "entry_point": "f"}
    assert program_of(he, "    return 1") == ("def f(x):\n\n    return 1", "def check(c): pass", "f")
    mbpp = {"text": "add", "test_list": ["assert add(1, 2) == 3"], "test_imports": ["import math"]}
    assert program_of(mbpp, "def add(a, b): return a + b") == (
        "import math\ndef add(a, b): return a + b", ["assert add(1, 2) == 3"], None)
    original = {"text": "add", "test_list": ["assert add(1, 2) == 3"], "test_setup_code": "K = 2",
                "challenge_test_list": ["assert add(K, K) == 4"]}  # original MBPP's fields
    assert program_of(original, "def add(a, b): return a + b") == (
        "def add(a, b): return a + b\nK = 2", ["assert add(1, 2) == 3", "assert add(K, K) == 4"], None)


def test_toy_family_split_and_rows():
    train, test = toy_problems("train"), toy_problems("test")
    assert len(train) + len(test) == len(instances()) and len(test) >= 150
    assert {r["id"] for r in train}.isdisjoint(r["id"] for r in test)
    assert all(split_of(r["family"], *map(int, r["id"].split("-")[-2:])) == "test" for r in test)
    assert toy_problems("test") == test  # deterministic
    assert {r["family"] for r in train} == {f.name for f in FAMILIES}


def test_every_family_canonical_passes_and_wrong_fails():
    task = get_task("code")
    rng = random.Random(0)
    rows = [problem(f.name, f.consts[0][0], (f.consts[1][0] if len(f.consts) > 1 else 0), rng) for f in FAMILIES]
    good = task.grade_many(rows, [fenced(r["prompt"] + r["canonical_solution"]) for r in rows])
    assert all(g.correct for g in good), [(r["id"], g) for r, g in zip(rows, good) if not g.correct]
    bad = task.grade_many(rows, [fenced(r["prompt"] + "    return None\n") for r in rows])
    assert not any(g.correct for g in bad)


def test_reward_is_the_share_of_tests_passed():
    task = get_task("code")
    row = problem("clamp_low", 5, 0, random.Random(1))  # f(x) = max(x, 5)
    xs = [int(line.split("candidate(")[1].split(")")[0]) for line in row["test"].splitlines()[1:]]
    want = sum(x >= 5 for x in xs) / 4  # `return x` is right exactly where x >= 5
    reward, comps = task.reward(row, fenced("def f(x):\n    return x"))
    assert comps["tests_passed"] == want and comps["accuracy"] == float(want == 1.0)
    assert reward == pytest.approx(want + 0.1)
    assert task.reward(row, "no code at all</think><answer></answer>")[1]["tests_passed"] == 0.0


def run_body(row: dict, body: str):
    """f(example) under ``body`` (a ``return ...`` line): the row's text run apart from its reference."""
    f = BY_NAME[row["family"]]
    return eval(body.removeprefix("return "), {"__builtins__": {"sum": sum, "max": max, "min": min, "len": len,
                                                                "range": range}}, {f.arg: row["example_input"]})


def test_unnamed_constant_is_fixed_by_the_example():
    row = problem("affine", 3, 4, random.Random(2))  # f(x) = x * 3 + 4, k unnamed
    assert row["hidden_constant"] and "times k plus 4, where f(" in row["spec"]
    x, y = row["example_input"], row["example_output"]
    assert y == 3 * x + 4 and f"f({x}) = {y}." in row["spec"]
    assert [k for k in range(2, 13) if k * x + 4 == y] == [3]  # only k = 3 fits the example
    # count_char spells its letter: one count never pins the letter down
    assert not problem("count_char", 2, 0, random.Random(0))["hidden_constant"]
    rows = toy_problems("train") + toy_problems("test")
    assert sum(r["hidden_constant"] for r in rows) / len(rows) > 0.9
    for r in rows:  # the example is the solution's own output
        assert run_body(r, r["canonical_solution"].strip()) == r["example_output"]


def test_steps_by_hand():
    f = BY_NAME
    assert steps(f["affine"], 12, 5, 2) == "12*5=60 60+2=62"
    assert steps(f["affine"], -3, 4, 1) == "-3*4=-12 -12+1=-11"
    assert steps(f["sub_mul"], 1, 18, 8) == "1-18=-17 -17*8=-136"
    assert steps(f["sum_list"], [15, 1, 9], 10, 0) == "15+1=16 16+9=25 25+10=35"
    assert steps(f["sum_list"], [7], 3, 0) == "7+3=10"
    assert steps(f["max_list"], [2, 9, 4], 3, 0) == "max(xs)=9 9*3=27"
    assert steps(f["count_gt"], [7, 1, 9], 5, 0) == ">5: 7 9 = 2"
    assert steps(f["count_gt"], [1, 2], 5, 0) == ">5: = 0"
    assert steps(f["range_sum"], 5, 3, 0) == "3+4+5=12" and steps(f["range_sum"], 9, 3, 0) == "3+...+9=42"
    assert steps(f["reverse_repeat"], "abc", 2, 0) == "'abc'[::-1]='cba' 'cba'*2='cbacba'"
    assert steps(f["upper_plus"], "ab", 3, 0) == "'AB'+'d'='ABd'"


def test_direction_of_the_unnamed_constant():
    assert direction(BY_NAME["affine"], 3, 4) == 1  # 3k + 4 rises with k
    assert direction(BY_NAME["affine"], -5, 4) == -1  # -5k + 4 falls
    assert direction(BY_NAME["sub_mul"], 1, 8) == -1  # (1 - k) * 8 falls
    assert direction(BY_NAME["modulo"], 7, 0) == 0  # 7 % k goes up and down
    assert direction(BY_NAME["reverse_repeat"], "ab", 0) == 0  # not a number


def test_worked_solution_attempts_checks_and_gives_up():
    row = problem("affine", 3, 4, random.Random(2))
    x, y = row["example_input"], row["example_output"]
    assert row["constants"] == [3, 4] and x > 0
    right = worked_solution(row, random.Random(0), style=CodeStyle(first_correct=1.0))
    assert right.startswith(f"`return x * 3 + 4`: {x}*3={3 * x} {3 * x}+4={y} ok</think>")
    gave_up = worked_solution(row, random.Random(0), style=CodeStyle(first_correct=0.0, retry=0.0))
    first = gave_up.split("`: ")[0].strip("`")
    k = int(first.split("* ")[1].split(" ")[0])
    side = "> " + str(y) + " no, too big" if k > 3 else "< " + str(y) + " no, too small"
    assert k != 3 and gave_up.startswith(f"`{first}`: {x}*{k}={k * x} {k * x}+4={k * x + 4} {side}</think>")
    assert f"    {first}\n```" in gave_up  # the wrong attempt is the answer
    retried = worked_solution(row, random.Random(1), style=CodeStyle(first_correct=0.0, retry=1.0, max_attempts=3))
    assert retried.count(" no") == 3 and "wait" in retried


def test_retries_search_the_side_the_check_points_to():
    for seed in range(30):
        rng = random.Random(seed)
        name = rng.choice(["affine", "sub_mul", "square_plus", "sum_list"])
        f = BY_NAME[name]
        k = rng.choice(list(f.consts[0]))
        j = f.consts[1][0] if len(f.consts) > 1 else 0
        row = problem(name, k, j, rng)
        if not row["hidden_constant"]:
            continue
        text = worked_solution(row, rng, style=CodeStyle(first_correct=0.0, retry=1.0, max_attempts=64))
        trace = text.split("</think>")[0]
        assert trace.endswith(" ok")  # the search always ends on the constant
        sign = direction(f, row["example_input"], j)
        low, high = min(f.consts[0]), max(f.consts[0])
        bodies = {f"return {f.body.format(k=c, j=j)}": c for c in f.consts[0]}
        for attempt in trace.split("wait")[:-1]:  # each failed attempt narrows the interval
            tried = bodies[attempt.split("`")[1]]
            if sign == 0:
                continue
            assert ("too small" in attempt) != ("too big" in attempt)
            up = ("too small" in attempt) == (sign > 0)
            low, high = (tried + 1, high) if up else (low, tried - 1)
            assert low <= k <= high


def test_worked_solution_is_graded_correct():
    task = get_task("code")
    rows = toy_problems("train")[:12]
    texts = [worked_solution(r, random.Random(i), style=CodeStyle(first_correct=1.0)) for i, r in enumerate(rows)]
    assert all(g.correct for g in task.grade_many(rows, texts))


def test_hostile_completion_is_a_fail_and_harmless():
    task = get_task("code")
    row = toy_problems("test")[0]
    g = task.grade(row, fenced("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.killpg(0, 9)"))
    assert not g.correct  # and this process is still here


def test_mbpp_rows():
    task = get_task("code")
    row = {"id": "m1", "text": "Add two numbers.", "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}
    assert task.grade(row, fenced("def add(a, b):\n    return a + b")).correct
    assert task.reward(row, fenced("def add(a, b):\n    return 3"))[1]["tests_passed"] == 0.5
    assert "Your code should pass: assert add(1, 2) == 3" in task.prompt(row)


def _humaneval(shared_file):
    return get_task("code", data=str(shared_file("humaneval", "HumanEval.jsonl.gz")))


def test_humaneval_canonical_solutions_pass_and_shifted_ones_fail():
    from conftest import shared_file

    task = _humaneval(shared_file)
    rows = task.examples("test")
    assert len(rows) == 164
    ok = task.grade_many(rows, [r["canonical_solution"] for r in rows])
    assert sum(g.correct for g in ok) == 164, [r["id"] for r, g in zip(rows, ok) if not g.correct]
    shifted = task.grade_many(rows, [rows[(i + 1) % 164]["canonical_solution"] for i in range(164)])
    assert sum(g.correct for g in shifted) <= 0.05 * 164


def test_score_code_prints_the_sandbox_level(tmp_path):
    rows = toy_problems("test")[:3]
    path = tmp_path / "responses.jsonl"
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps({**r, "responses": [fenced(r["prompt"] + r["canonical_solution"]), "nothing"]}) + "\n")
    out = subprocess.run([sys.executable, "-m", "r1lab", "score", str(path), "--task", "code"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["pass@1"] == 0.5 and result["sandbox_level"] in LEVELS
    assert "code sandbox: level" in out.stderr
