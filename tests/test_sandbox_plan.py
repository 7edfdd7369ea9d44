"""The code sandbox's pure parts, no process started: test plans (expected values kept in the
parent), the harness's plain-value encoding, scores, and the seccomp program's shape.
The sandbox itself and the hostile programs: tests/test_sandbox.py."""

from __future__ import annotations

import json
import struct

import pytest

from r1lab.rewards.sandbox import Verdict, build_plan, score
from r1lab.rewards.sandbox import _harness as harness
from r1lab.rewards.sandbox.plan import decode, judge


def test_plan_keeps_literal_expected_values_in_the_parent():
    plan = build_plan(["assert f(1) == 'SECRET-ANSWER'", "assert 2 < f(3)", "assert not f(0)",
                       "for i in range(3):\n    assert f(i) == i", "import math"], "def f(x): return x")
    assert [t.kind for t in plan.tests] == ["value", "value", "value", "check"]
    assert all("SECRET-ANSWER" not in src for _, _, src in plan.steps)
    assert plan.steps[0] == ("value", 0, "__r1lab_plain__(f(1))")
    assert plan.steps[-1] == ("exec", -1, "import math")
    assert "__r1lab_cmp__('==', __r1lab_plain__(f(i)), i)" in plan.steps[3][2]
    assert judge(plan.tests[0], "SECRET-ANSWER") == (True, "")
    assert judge(plan.tests[1], 5)[0] and not judge(plan.tests[1], 1)[0]
    assert not judge(plan.tests[1], None)[0]  # None > 2: a TypeError is a fail, as the assert would be


def test_plan_humaneval_format_skips_constant_asserts():
    tests = ("METADATA = {}\n\ndef check(candidate):\n    assert True, 'debug line'\n"
             "    assert candidate(1) == 2\n    x = 3\n    assert abs(candidate(x) - 4.0) < 1e-6\n")
    plan = build_plan(tests, "def g(a): return a + 1", entry_point="g")
    assert len(plan.tests) == 2
    assert plan.pre == ["METADATA = {}"]
    assert plan.steps[0] == ("exec", -1, "candidate = g")
    with pytest.raises(ValueError, match="check"):
        build_plan("assert g(1) == 2", "", entry_point="g")
    with pytest.raises(ValueError, match="parse"):
        build_plan(["assert ("], "")


def test_plain_and_encode_round_trip_and_reject_lying_objects():
    value = {"a": [1, 2.5, (3, None)], (1, 2): {frozenset({1}), "x"}, "n": float("inf"), "b": b"\x00",
             "c": 1j}
    assert decode(json.loads(harness.encode(harness.plain(value)))) == value
    assert type(harness.plain(True)) is bool and harness.plain((1, 2)) == (1, 2)

    class AlwaysEq:
        def __eq__(self, other):
            return True

    class Sneaky(int):
        def __eq__(self, other):
            return True

    with pytest.raises(TypeError):
        harness.plain(AlwaysEq())
    assert type(harness.plain(Sneaky(3))) is int and harness.plain(Sneaky(3)) != 4


def test_score_is_a_fraction_and_zero_when_anything_went_wrong():
    assert score(Verdict(passed=3, total=4, status="ok")) == 0.75
    assert score(Verdict(passed=4, total=4, status="timeout")) == 0.0
    assert score(Verdict(passed=0, total=0, status="ok")) == 0.0


def test_seccomp_program_is_well_formed():
    prog = harness.seccomp_program("x86_64")
    assert len(prog) % 8 == 0 and len(prog) // 8 < 256
    for i in range(0, len(prog), 8):  # every jump lands inside the program
        code, jt, jf, _ = struct.unpack("HBBI", prog[i:i + 8])
        if code & 0x07 == 0x05:
            assert i // 8 + 1 + max(jt, jf) < len(prog) // 8
