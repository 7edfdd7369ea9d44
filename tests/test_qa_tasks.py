"""GSM8K and Math tasks: options, examples from files, extraction, grading, fuzzing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from _fuzz import any_text
from hypothesis import given, settings

from r1lab.config import ConfigError
from r1lab.rewards.math_equiv import grader_stats
from r1lab.tasks import get_task
from r1lab.tasks.gsm8k import GSM8K, gold_answer
from r1lab.tasks.math import Math

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED} is absent")


def test_options_and_kwargs():
    task = get_task("gsm8k", data="x.jsonl", template="short", extract_methods="hashes,last_number")
    assert isinstance(task, GSM8K)
    assert task.options.data == "x.jsonl" and task.options.extract_methods == ("hashes", "last_number")
    assert task.options.template == "short"
    assert get_task("gsm8k").options.data == "openai/gsm8k:main"
    math = get_task("math", grader_timeout=2.0)
    assert isinstance(math, Math) and math.options.data == "HuggingFaceH4/MATH-500"
    with pytest.raises(ConfigError, match="no option"):
        get_task("math", nonsense=1)
    with pytest.raises(ValueError, match="grader_timeout"):
        get_task("math", grader_timeout=0)
    with pytest.raises(ValueError, match="unknown extraction"):
        get_task("gsm8k", extract_methods=("guess",))


def test_gsm8k_gold_and_check():
    assert gold_answer("She makes 9 * 2 = $18.\n#### 1,018") == "1018"
    assert gold_answer("18") == "18"
    task = GSM8K()
    ex = {"question": "q", "answer": "work\n#### 72"}
    assert task.grade(ex, "...</think><answer>72</answer>").correct
    assert task.grade(ex, "...</think><answer>$72.00</answer>").format_ok
    assert task.grade(ex, "so the answer is 72 clips.").correct
    assert task.grade(ex, "she sold 48 + 24 = 72").correct
    assert not task.grade(ex, "</think><answer>71</answer>").correct
    assert not task.grade(ex, "").correct
    assert task.grade(ex, "<answer>She sold 72 clips</answer>").extracted == "72"
    assert task.grade({"answer": "0.5"}, "#### 1/2").correct


def test_math_grade():
    task = Math()
    ex = {"question": "q", "answer": "\\left( 3, \\frac{\\pi}{2} \\right)"}
    g = task.grade(ex, "so r = 3 ...</think><answer>$\\boxed{(3, \\frac{\\pi}{2})}$</answer>")
    assert g.correct and g.format_ok and g.error is None
    assert task.grade({"answer": "The sum is \\boxed{\\frac{14}{3}}."}, "\\boxed{\\dfrac{14}{3}}").correct
    assert not task.grade(ex, "\\boxed{(3, \\pi)}").correct
    assert task.extract("\\boxed{ \\left( 1, 2 \\right) }") == "(1,2)"
    grades = task.grade_many([ex, ex, ex], ["\\boxed{(3,\\pi/2)}", "", "\\boxed{9^{9^{9^{9}}}}"])
    assert [g.correct for g in grades] == [True, False, False]


def test_examples_from_local_files(tmp_path):
    gsm = tmp_path / "g.jsonl"
    gsm.write_text(json.dumps({"question": "q1", "answer": "1+1=2\n#### 2"}) + "\n")
    [ex] = GSM8K(data=str(gsm)).examples("test")
    assert ex == {"id": "gsm8k-test-0", "question": "q1", "answer": "2", "solution": "1+1=2\n#### 2"}
    mth = tmp_path / "m.jsonl"
    mth.write_text(json.dumps({"problem": "p", "solution": "so \\boxed{\\frac12}", "level": 3}) + "\n")
    [ex] = Math(data=str(mth), answer_field="solution").examples()
    assert ex["answer"] == "\\frac12" and ex["question"] == "p" and ex["level"] == 3


@needs_shared
def test_real_examples_grade_their_own_gold():
    gsm = GSM8K(data=str(SHARED / "gsm8k"), limit=50)
    examples = gsm.examples("test")
    assert len(examples) == 50 and all(gsm.grade(e, e["solution"]).correct for e in examples)
    math = Math(data=str(SHARED / "math500"), limit=50)
    examples = math.examples("test")
    grades = math.grade_many(examples, [f"\\boxed{{{e['answer']}}}" for e in examples])
    assert all(g.correct for g in grades)


@settings(max_examples=60, deadline=None)
@given(any_text)
def test_fuzz_gsm8k_grade(text):
    start = time.perf_counter()
    task = GSM8K()
    for ex in ({"answer": "#### 18"}, {"answer": text}):
        g = task.grade(ex, text)
        assert g.error is None and isinstance(g.correct, bool)
        task.reward(ex, text)
    assert time.perf_counter() - start < 1.0


@settings(max_examples=20, deadline=None)
@given(any_text)
def test_fuzz_math_grade(text):
    task = Math(grader_timeout=1.0)
    restarts = grader_stats()["restarts"]
    start = time.perf_counter()
    g = task.grade({"answer": "\\frac{1}{2}"}, text)
    assert isinstance(g.correct, bool) and g.error in (None, "timeout")
    if grader_stats()["restarts"] == restarts:  # a hard kill's replacement start-up is not an item's time
        assert time.perf_counter() - start < 1.0 + 0.75
