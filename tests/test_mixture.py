"""Task mixtures: the spec, weighted training prompts, interleaved held-out sets, dispatch, metrics."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from r1lab.config import ConfigError
from r1lab.tasks import check_spec, get_task
from r1lab.tasks.mixture import Mixture, is_mixture, parse_spec


def test_parse_spec():
    assert parse_spec("countdown:0.5,knights_knaves:0.25") == [("countdown", 0.5), ("knights_knaves", 0.25)]
    assert parse_spec("countdown,arithmetic") == [("countdown", 1.0), ("arithmetic", 1.0)]
    assert parse_spec("rg:knights_knaves:2,countdown") == [("rg:knights_knaves", 2.0), ("countdown", 1.0)]
    assert parse_spec("rg:countdown") == [("rg:countdown", 1.0)]
    assert is_mixture("countdown:1") and is_mixture("a,b") and not is_mixture("countdown")
    assert not is_mixture("rg:countdown")
    for bad, msg in (("countdown:0", "> 0"), ("countdown,,arithmetic", "empty"), ("countdown,countdown", "twice"),
                     (":0.5", "no task name")):
        with pytest.raises(ValueError, match=msg):
            parse_spec(bad)


def test_weighted_train_and_interleaved_test():
    task = get_task("countdown:0.75,knights_knaves:0.25", train_size=2000)
    assert isinstance(task, Mixture)
    train = task.examples("train")
    share = Counter(e["task"] for e in train)["countdown"] / len(train)
    assert abs(share - 0.75) < 0.03, share
    assert train == task.examples("train")  # deterministic
    assert len({e["id"] for e in train[:500]}) > 450  # cycling only once a member runs out
    test = task.examples("test")
    assert [e["task"] for e in test[:4]] == ["countdown", "knights_knaves", "countdown", "knights_knaves"]
    assert all(e["id"].startswith(e["task"] + "/") for e in test)


def test_dispatch_to_each_members_grader():
    task = get_task("countdown,knights_knaves")
    cd, kk = task.examples("test")[:2]
    assert "Use " in task.prompt(cd) and "knaves always lie" in task.prompt(kk)
    good_kk = "</think><answer>" + kk["answer"] + "</answer>"
    good_cd = "</think><answer>" + get_task("countdown").examples("test")[0]["answer"] + "</answer>"
    grades = task.grade_many([kk, cd], [good_kk, "x</think><answer>1+1</answer>"])
    assert grades[0].correct and not grades[1].correct
    assert task.reward(kk, good_kk)[1]["accuracy"] == 1.0
    assert good_cd  # countdown's own examples are graded by countdown (checked in test_tasks)


def test_options_go_to_members_that_have_them():
    task = get_task("countdown,knights_knaves", max_people=4, language="zh")
    assert task.members["knights_knaves"].options.max_people == 4
    assert task.members["countdown"].options.language == "zh"
    with pytest.raises(ConfigError, match="no member task has option 'nonsense'"):
        get_task("countdown,knights_knaves", nonsense=1)
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        get_task("countdown,nope")
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        check_spec("countdown:0.5,nope:0.5")
    check_spec("countdown:0.5,knights_knaves:0.5")


def test_zero_on_a_mixture_logs_per_task_metrics(tiny_model_dir, tmp_path):
    from r1lab.commands.zero import Config, run

    run(Config(model=tiny_model_dir, task="countdown:0.5,knights_knaves:0.5", output_dir=str(tmp_path / "mix"),
               steps=1, prompts_per_step=4, group_size=2, max_new_tokens=12, eval_problems=4, eval_k=1,
               eval_every=0, report_to="none", micro_batch=8))
    m = json.loads((tmp_path / "mix" / "metrics.jsonl").read_text().splitlines()[0])
    shares = [m[f"task/{n}/share"] for n in ("countdown", "knights_knaves") if f"task/{n}/share" in m]
    assert shares and sum(shares) == pytest.approx(1.0)
    ev = json.loads((tmp_path / "mix" / "eval.jsonl").read_text().splitlines()[0])
    assert ev["countdown/n_problems"] == 2 and ev["knights_knaves/n_problems"] == 2


# --- language 'mix': each prompt English or Chinese (R1 saw mixing with multilingual RL prompts) ---


def _has_han(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_example_language_by_hand():
    from r1lab.tasks.base import example_language

    # crc32("a") = 0xE8B7BE43 is odd -> zh; crc32("test-0") = 0x5C22B3F4 is even -> en
    assert example_language("mix", "a") == "zh" and example_language("mix", "test-0") == "en"
    assert example_language("en", "a") == "en" and example_language("zh", "test-0") == "zh"


@pytest.mark.parametrize("name", ["countdown", "arithmetic", "knights_knaves", "code"])
def test_mix_writes_each_prompt_in_its_own_language(name):
    task = get_task(name, language="mix")
    rows = task.examples("test")
    langs = [task.language_of(ex) for ex in rows]
    assert 0.4 < langs.count("zh") / len(rows) < 0.6 and set(langs) == {"en", "zh"}
    assert get_task(name, language="mix").examples("test") == rows  # the same split every time
    for ex, lang in list(zip(rows, langs))[:20]:
        assert _has_han(task.question(ex)) == (lang == "zh"), (name, ex["id"])


def test_mix_language_reward_is_relative_to_the_prompt():
    task = get_task("countdown:0.5,knights_knaves:0.5", language="mix", language_weight=1.0)
    rows = task.examples("test")[:40]
    zh = next(ex for ex in rows if task.language_of(ex) == "zh")
    en = next(ex for ex in rows if task.language_of(ex) == "en")
    english, chinese = "let me check this again </think> <answer>1</answer>", "让 我 再 检 查 </think> <answer>1</answer>"
    assert task.reward(zh, chinese)[1]["language"] == 1.0 and task.reward(zh, english)[1]["language"] == 0.0
    assert task.reward(en, english)[1]["language"] == 1.0 and task.reward(en, chinese)[1]["language"] == 0.0


def test_mix_is_refused_by_single_language_tasks():
    with pytest.raises(ValueError, match="language 'mix' needs a task written in en and zh"):
        get_task("gsm8k", language="mix")
