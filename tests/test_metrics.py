"""pass@k, majority vote and summarize: hand-checked numbers and a brute-force reference."""

from __future__ import annotations

import itertools
import math

import pytest

from r1lab.evaluation.metrics import default_ks, majority_vote, pass_at_k, summarize
from r1lab.tasks.base import Grade


def test_pass_at_k_by_hand():
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 7, 4) == 1.0  # fewer than k wrong samples: some draw must hit
    assert pass_at_k(3, 3, 3) == 1.0


def test_pass_at_k_matches_comb_and_enumeration():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                want = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)
    # enumeration: fraction of k-subsets of samples that contain a correct one
    samples = [1, 0, 1, 0, 0, 0]
    subsets = list(itertools.combinations(samples, 3))
    assert pass_at_k(6, 2, 3) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_is_stable_for_large_n():
    value = pass_at_k(10_000, 3, 1000)
    assert value == pytest.approx(1 - math.comb(9997, 1000) / math.comb(10_000, 1000), rel=1e-9)


@pytest.mark.parametrize("n, c, k", [(3, 1, 4), (3, 4, 1), (3, -1, 1), (3, 1, 0)])
def test_pass_at_k_rejects(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_majority_vote():
    assert majority_vote(["a", "b", "b", "a", "b"]) == 1
    assert majority_vote([None, "7", "8", "8", "7"]) == 1  # tie: "7" appears first
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None
    assert majority_vote([None, "x"]) == 1


def test_default_ks():
    assert default_ks(1) == (1,)
    assert default_ks(6) == (1, 2, 4, 6)
    assert default_ks(8) == (1, 2, 4, 8)


def G(correct: bool, answer: str | None, fmt: bool = True, error: str | None = None) -> Grade:
    return Grade(correct=correct, format_ok=fmt, extracted=answer, error=error)


def test_summarize_by_hand():
    grades = [
        [G(True, "5"), G(False, "4"), G(True, "5"), G(False, None, fmt=False)],  # 2/4, vote "5" right
        [G(False, "1"), G(False, "1"), G(True, "2"), G(False, "3", error="timeout")],  # 1/4, vote "1" wrong
    ]
    out = summarize(grades, lengths=[[10, 20, 30, 40], [1, 2, 3, 4]])
    assert out["n_problems"] == 2 and out["k"] == 4
    assert out["pass@1"] == pytest.approx((0.5 + 0.25) / 2)
    assert out["cons@k"] == pytest.approx(0.5)
    # pass@2: problem 1: 1 - C(2,2)/C(4,2) = 5/6; problem 2: 1 - C(3,2)/C(4,2) = 1/2
    assert out["pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert out["pass@4"] == pytest.approx(1.0)
    assert out["format_rate"] == pytest.approx((0.75 + 1.0) / 2)
    assert out["mean_length"] == pytest.approx(110 / 8)
    assert out["grader_errors"] == 1
    assert all(type(v) in (int, float) for v in out.values())


def test_summarize_uneven_rows_and_errors():
    out = summarize([[G(True, "1")], [G(False, "2"), G(True, "3")]])
    assert out["k"] == 1 and "k_note" in out
    assert out["pass@1"] == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([[G(True, "1")], []])
    with pytest.raises(ValueError):
        summarize([[G(True, "1")]], ks=(2,))
