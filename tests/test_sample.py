"""Rejection sampling: each readability filter on hand-made text, the keep rules, hindsight, the command."""

from __future__ import annotations

import json
import random

import pytest

from r1lab.evaluation.readability import (
    Limits,
    has_code_block,
    longest_paragraph,
    problems,
    readability_stats,
)
from r1lab.tasks import get_task
from r1lab.train.rejection import Candidate, Rules, select

GOOD = "3*5=15 15+7=22 ok</think><answer>(3*5)+7</answer>"


@pytest.mark.parametrize(("text", "found"), [
    (GOOD, []),
    ("3*5=15 15+7=22 ok</think><answer>(3*5)+7</answer><answer>1</answer>", ["tags"]),  # repeated tag
    ("3*5=15 ok <answer>(3*5)+7</answer>", ["tags"]),  # missing </think>
    ("3*5=15 等等，让我再试一次。这个不对 15+7=22 ok</think><answer>(3*5)+7</answer>", ["mixed_language"]),
    ("x" * 50 + "\n\n" + "word " * 300 + "</think><answer>1</answer>", ["long_paragraph"]),
    ("see\n```python\nprint(1)\n```\n</think><answer>1</answer>", ["code_block"]),
])
def test_each_filter_on_hand_made_text(text, found):
    assert problems(text, "en") == found


def test_filter_details():
    assert longest_paragraph("ab\n\ncdef\n \nx") == 4
    assert has_code_block("```a```") and not has_code_block("``` one fence")
    assert problems("```python\nx\n```</think><answer>1</answer>", "en", code_task=True) == []
    assert problems(GOOD, "en", limits=Limits(max_chars=10)) == ["too_long"]
    assert problems("计算：三加五等于八</think><answer>8</answer>", "zh") == []
    st = readability_stats([GOOD, "等等 wait</think><answer>1</answer>"], ["en", "en"])
    assert st["mixed_language_share"] == 0.5 and 0 < st["language_consistency"] < 1
    # an empty reasoning is counted apart, not as perfectly consistent
    st = readability_stats(["等等 wait</think><answer>1</answer>", "</think><answer>1</answer>"], ["en", "en"])
    assert st["language_consistency"] == pytest.approx(1 / 3) and st["empty_reasoning_share"] == 0.5
    assert st["mixed_language_share"] == 0.5


def _cands(task, ex, texts):
    return [Candidate(ex, task.prompt(ex), t, task.reward(ex, t)[0], task.grade(ex, t).correct) for t in texts]


def test_keep_rules_dedupe_and_cap():
    task = get_task("countdown")
    ex = {"id": "a", "nums": [3, 5, 7], "target": 22, "answer": "22"}
    right2 = "5*3=15 15+7=22 ok</think><answer>(5*3)+7</answer>"
    wrong = "3+5=8 8*7=56 no</think><answer>(3+5)*7</answer>"
    group = _cands(task, ex, [GOOD, GOOD, right2, wrong, GOOD.replace("ok", "ok 等等")])
    rows, summary = select([group], task, Rules(max_per_prompt=1), random.Random(0))
    assert [r["response"] for r in rows] == [GOOD] and rows[0]["source"] == "sample"
    assert summary["removed"] == {"incorrect": 1, "duplicate": 1, "over_max_per_prompt": 1, "mixed_language": 1}
    rows, summary = select([group], task, Rules(keep="top", top_n=2, max_per_prompt=4), random.Random(0))
    assert len(rows) == 1 and summary["removed"]["duplicate"] == 1  # the top two are the same text
    assert summary["removed"]["not_top"] == 3


def test_hindsight_relabels_countdown_and_stays_in_train():
    task = get_task("countdown")
    ex = {"id": "a", "nums": [3, 5, 7], "target": 22, "answer": "22"}
    wrong = "3+5=8 8*7=56 no</think><answer>(3+5)*7</answer>"
    relabelled = task.relabel(ex, wrong)
    assert relabelled is not None
    new, text = relabelled
    assert new["target"] == 56 and text.endswith("8*7=56 ok</think><answer>(3+5)*7</answer>")
    assert task.grade(new, text).correct and not task.grade(ex, text).correct
    assert task.relabel(ex, "3+5=8 8*7=56 no</think><answer>(3+5)*6</answer>") is None  # not the given numbers
    assert task.relabel(ex, "3-5=-2 -2-7=-9 no</think><answer>(3-5)-7</answer>") is None  # not a valid target
    group = _cands(task, ex, [GOOD, wrong])
    rows, summary = select([group], task, Rules(hindsight=1.0), random.Random(0))
    assert summary["added"]["hindsight"] == 1 and rows[-1]["prompt"] == "Use 3 5 7 to make 56.\n<think>"
    from r1lab.tasks.countdown import split_of

    leak = [(n, t) for n in [(3, 5, 7)] for t in range(1, 100) if split_of(n, t) == "test"]
    for nums, target in leak[:3]:  # a relabel never lands on a held-out instance
        assert task.relabel({**ex, "nums": list(nums)}, f"x={target} no</think><answer>{target}</answer>") is None


def test_start_state_and_non_reasoning_rows():
    task = get_task("countdown")
    ex = {"id": "a", "nums": [3, 5, 7], "target": 22, "answer": "22"}
    group = _cands(task, ex, [GOOD])
    rows, summary = select([group], task, Rules(start_state=1.0, non_reasoning=1.0), random.Random(1))
    by = {r["source"]: r for r in rows}
    s = by["start_state"]
    assert s["prompt"].startswith(task.prompt(ex)) and (s["prompt"] + s["response"]) == task.prompt(ex) + GOOD
    assert by["non_reasoning"]["response"] == "</think><answer>(3*5)+7</answer>"
    assert task.grade(ex, by["non_reasoning"]["response"]).correct
    assert summary["added"] == {"hindsight": 0, "start_state": 1, "non_reasoning": 1}


def test_sample_command_writes_rows_and_provenance(tiny_model_dir, tmp_path):
    from r1lab.commands.sample import Config, run

    out = tmp_path / "rs.jsonl"
    summary = run(Config(model=tiny_model_dir, task="countdown", prompts=6, k=3, max_new_tokens=16,
                         keep="top", output=str(out), non_reasoning=0.5))
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == summary["rows"] and summary["candidates"] == 18
    prov = json.loads(out.with_suffix(".summary.json").read_text())
    assert prov["config"]["k"] == 3 and prov["task"]["task"] == "countdown" and "removed" in prov
    assert all({"prompt", "response", "source", "id"} <= set(r) for r in rows)
