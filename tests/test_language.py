"""Language consistency: real English/Chinese text, the tiny model's corpus style, edge cases."""

from __future__ import annotations

import time

import pytest
from _fuzz import any_text
from hypothesis import given, settings

from r1lab.rewards.language import language_consistency, normalize_language, strip_code, word_languages

ENGLISH = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning, so she "
    "sells 16 - 3 - 4 = 9 eggs and makes 9 * 2 = $18."
)
CHINESE = "珍妮的鸭子每天下16个蛋。她每天早上吃三个，所以她卖出 16 - 3 - 4 = 9 个蛋，赚 18 美元。"


def test_word_languages_by_hand():
    assert word_languages("Let me check: 3*5=15") == ["en", "en", "en"]
    assert word_languages("等等，让我检查 3*5=15 对") == ["zh"] * 7
    assert word_languages("don't stop") == ["en", "en"]  # an apostrophe stays inside the word
    assert word_languages("x + y = 2, \\frac{a}{b}") == []  # variables and commands are neutral
    assert word_languages("Привет мир") == ["ru", "ru"]
    assert word_languages("café naïve") == ["en", "en"]
    assert word_languages("3×4÷2") == []


def test_real_text():
    assert language_consistency(ENGLISH, "en") == 1.0
    assert language_consistency(ENGLISH, "zh") == 0.0
    assert language_consistency(CHINESE, "zh") == 1.0
    assert language_consistency(CHINESE, "en") == 0.0


def test_tiny_model_corpus():
    zh = "3*5=15 15+7=22 对 等等，让我检查一下。 3+5=8 不对"
    assert language_consistency(zh, "zh") == 1.0
    en = "3*5=15 15+7=22 ok wait, let me check another way. 3+5=8 no"
    assert language_consistency(en, "en") == 1.0
    mixed = "3*5=15 ok 等等 让我检查"  # 1 English word, 6 ideographs
    assert language_consistency(mixed, "zh") == pytest.approx(6 / 7)
    assert language_consistency(mixed, "en") == pytest.approx(1 / 7)


def test_no_words_is_consistent():
    assert language_consistency("", "en") == 1.0
    assert language_consistency("3*5=15 -> 15+7=22 !!!", "zh") == 1.0


def test_code_is_not_a_language():
    think = "试一下 `return x * 3 + 4` 所以 f(2) = 10 对"  # 6 Chinese characters, the Python left out
    assert language_consistency(think, "zh") == 1.0
    assert language_consistency(think.replace("`", ""), "zh") == pytest.approx(6 / 7)  # "return" is English
    fenced = "先写函数\n```python\ndef f(x):\n    return x\n```\n好"
    assert language_consistency(fenced, "zh") == 1.0
    assert language_consistency("写 ```python\nprint(1)", "zh") == 1.0  # an unclosed fence runs to the end
    assert strip_code("a `b` c") == "a   c"


def test_language_codes():
    assert normalize_language("zh-CN") == "zh"
    assert normalize_language("English") == "en"
    with pytest.raises(ValueError, match="unknown language"):
        language_consistency("hi", "klingon")


@settings(max_examples=150, deadline=None)
@given(any_text)
def test_fuzz_language(text):
    start = time.perf_counter()
    for lang in ("en", "zh"):
        value = language_consistency(text, lang)
        assert 0.0 <= value <= 1.0
    assert time.perf_counter() - start < 1.0


def test_long_input_is_fast():
    start = time.perf_counter()
    language_consistency("等等 wait " * 200_000, "zh")
    assert time.perf_counter() - start < 2.0


def test_reward_gives_no_credit_to_reasoning_without_words():
    from r1lab.rewards.language import language_reward
    from r1lab.tasks import get_task

    assert language_consistency("", "zh") == 1.0  # the metric: nothing to be inconsistent with
    assert language_reward("", "zh") == 0.0 and language_reward("3+5=8 8*2=16", "en") == 0.0
    assert language_reward("小明 ok 小红 ok", "zh") == 2 / 3  # as consistency when there are words
    assert language_reward("小明是骑士", "zh") == 1.0
    # in a task's reward: an empty think block earns no language credit
    task = get_task("knights_knaves", language="zh", language_weight=0.5)
    ex = task.examples("test")[0]
    answer = "<answer>" + ex["answer"] + "</answer>"
    empty, _ = task.reward(ex, "</think>" + answer)
    reasoned, comps = task.reward(ex, "小明是骑士，小红是无赖。</think>" + answer)
    assert comps["language"] == 1.0 and reasoned - empty == 0.5
