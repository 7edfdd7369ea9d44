"""Math equivalence: math-verify in a worker process, timeouts, threads, fast paths, fuzzing."""

from __future__ import annotations

import threading
import time

import pytest
from _fuzz import any_text
from hypothesis import given, settings

from r1lab.rewards.math_equiv import (
    Grader,
    grader_stats,
    judge_many,
    math_equal,
    math_equal_many,
    normalize_latex,
)

SLOW = "9^{9^{9^{9}}}"  # sympy would compute a number with ~10^8 digits
SLACK = 0.75  # seconds of scheduling/IPC slack on a busy 2-core machine


@pytest.fixture(scope="module", autouse=True)
def warm_worker():
    math_equal("x+1", "1+x")  # start the shared worker once; start-up is not charged to items


def _delta(before: dict, key: str) -> int:
    return grader_stats()[key] - before[key]


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("\\frac{1}{2}", "0.5"),
        ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\dfrac{14}{3}", "\\frac{14}{3}"),
        ("(x-1)(x+1)", "x^2-1"),
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("$p - q$", "p - q"),
        ("\\boxed{9}", "9"),
        ("10.0", "10"),
    ],
)
def test_equal(pred, gold):
    assert math_equal(pred, gold) is True


@pytest.mark.parametrize(
    "pred, gold",
    [("2", "3"), ("\\frac{1}{3}", "0.5"), ("x^2+1", "x^2-1"), ("", "1"), ("1", ""), ("(1,2)", "(2,1)")],
)
def test_not_equal(pred, gold):
    assert math_equal(pred, gold) is False


def test_normalize_latex():
    assert normalize_latex("$\\left( 3, \\dfrac{\\pi}{2} \\right).$") == "(3,\\frac{\\pi}{2})"
    assert normalize_latex("\\boxed{x \\cdot y}") == "x\\cdot y"  # the space a command needs stays
    assert normalize_latex("\\boxed{1} + \\boxed{2}") == "\\boxed{1}+\\boxed{2}"
    assert normalize_latex(None) == ""  # type: ignore[arg-type]


def test_fast_paths_skip_the_worker():
    before = grader_stats()
    assert math_equal_many([("\\left(1,2\\right)", "(1, 2)"), ("0.5", "1/2"), ("12", "13")]) == [
        True,
        True,
        False,
    ]
    assert _delta(before, "fast_path") == 3
    assert _delta(before, "worker_items") == 0


def test_soft_timeout_returns_false_and_counts():
    before = grader_stats()
    start = time.perf_counter()
    assert math_equal(SLOW, "1", timeout=1.0) is False
    assert time.perf_counter() - start < 1.0 + SLACK
    assert _delta(before, "timeouts") == 1


def test_batch_keeps_per_item_timeouts():
    pairs = [("\\frac{2}{4}", "\\frac12"), (SLOW, "1"), ("\\sqrt{4}", "2"), (SLOW, "2"), ("x+y", "y+x")]
    before = grader_stats()
    start = time.perf_counter()
    out = judge_many(pairs, timeout=1.0)
    assert [ok for ok, _ in out] == [True, False, True, False, True]
    assert [err for _, err in out] == [None, "timeout", None, "timeout", None]
    assert time.perf_counter() - start < 2 * 1.0 + SLACK
    assert _delta(before, "timeouts") == 2


def test_hard_kill_when_the_worker_ignores_signals():
    grader = Grader(soft_fraction=0.0)  # no in-worker timer: only the parent's kill can stop it
    try:
        assert grader.run([("1", "1")], 5.0) == [(True, None)]  # warm up
        before = grader_stats()
        start = time.perf_counter()
        out = grader.run([(SLOW, "1"), ("\\sqrt{9}", "3")], 1.0)
        assert out == [(False, "timeout"), (True, None)]  # the rest of the batch survives the kill
        assert time.perf_counter() - start < 1.0 + 30  # includes the replacement worker's start-up
        assert _delta(before, "restarts") == 1
    finally:
        grader.shutdown()


def test_from_other_threads():
    results: dict[int, list[bool]] = {}

    def work(i: int) -> None:
        results[i] = math_equal_many(
            [("\\frac{\\pi}{2}", "\\pi/2"), ("x^2", "x^3"), (SLOW, "1")], timeout=1.0
        )

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert results == {i: [True, False, False] for i in range(3)}


def test_unavailable_worker_falls_back():
    grader = Grader(start_timeout=10)
    grader.worker_code = "raise SystemExit(3)"
    out = grader.run([("0.5", "1/2"), ("x", "y")], 1.0)
    assert out == [(True, "grader unavailable"), (False, "grader unavailable")]
    assert grader.unavailable


def test_bad_timeout_raises():
    with pytest.raises(ValueError, match="timeout"):
        math_equal("1", "1", timeout=0)


@settings(max_examples=25, deadline=None)
@given(any_text, any_text)
def test_fuzz_math_equal(pred, gold):
    restarts = grader_stats()["restarts"]
    start = time.perf_counter()
    assert isinstance(math_equal(pred, gold, timeout=1.0), bool)
    if grader_stats()["restarts"] == restarts:  # a hard kill's replacement start-up is not an item's time
        assert time.perf_counter() - start < 1.0 + SLACK
