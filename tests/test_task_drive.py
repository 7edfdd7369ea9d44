"""The ``drive`` task: an LM's plan is graded by driving it (issue 15)."""

from __future__ import annotations

import pytest

pytest.importorskip("highway_env", reason="the driving extra (highway-env) is not installed")

from r1lab.driving.env import ANCHORS  # noqa: E402
from r1lab.driving.reasoner import plan_text  # noqa: E402
from r1lab.driving.task import drive_plan  # noqa: E402
from r1lab.tasks import get_task  # noqa: E402


@pytest.fixture(scope="module")
def task():
    return get_task("drive", train_size=6, test_size=3, horizon=2.0)


def test_examples_are_start_states_with_disjoint_seeds(task):
    train, test = task.examples("train"), task.examples("test")
    assert [e["category"] for e in test] == ["highway", "urban", "roundabout"]
    assert max(e["seed"] for e in train) < min(e["seed"] for e in test)
    q = task.question(test[0])
    assert q.startswith("Scene: speed ") and q.endswith("Plan the next seconds.")
    assert "<think>" in task.prompt(test[0])


def test_a_plan_is_graded_by_driving_it(task):
    ex = task.examples("test")[0]  # highway
    keep = ANCHORS.index((20.0, 0))
    want, comps = drive_plan(ex["category"], ex["seed"], keep, 2.0)
    completion = f"I keep my lane.</think><answer>{plan_text(keep)}</answer>"
    g = task.grade(ex, completion)
    assert g.extracted == "speed 20 keep" and g.format_ok and g.correct == (comps["gate"] == 1.0)
    reward, parts = task.reward(ex, completion)
    assert parts["drive_reward"] == pytest.approx(want)
    assert reward == pytest.approx(task.options.accuracy_weight * want + task.options.format_weight)


@pytest.mark.parametrize("completion", ["", "</think><answer>speed 21 keep</answer>",
                                        "</think><answer>go fast</answer>", "no tags at all", None])
def test_unparseable_plans_fail_without_crashing(task, completion):
    ex = task.examples("test")[1]
    g = task.grade(ex, completion)
    assert not g.correct and g.extracted is None and g.error is None
    reward, parts = task.reward(ex, completion)
    assert parts["drive_reward"] == 0.0 and reward <= task.options.format_weight


def test_stopping_is_safe_but_earns_no_progress(task):
    ex = task.examples("test")[0]
    stop = ANCHORS.index((0.0, 0))
    _, comps = drive_plan(ex["category"], ex["seed"], stop, 2.0)
    fast = ANCHORS.index((25.0, 0))
    _, comps_fast = drive_plan(ex["category"], ex["seed"], fast, 2.0)
    assert comps["progress"] < comps_fast["progress"]
