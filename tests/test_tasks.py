"""Countdown and Arithmetic: generators, splits, grading (hand examples + hostile fuzz), corpus."""

from __future__ import annotations

import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from r1lab.rewards.format import parse_response
from r1lab.tasks import corpus, get_task
from r1lab.tasks.countdown import CorpusStyle, evaluate_expression, instance_key, solutions, worked_solution


def test_countdown_grading_by_hand():
    task = get_task("countdown")
    ex = {"nums": [3, 5, 7], "target": 22}
    good = "3*5=15 15+7=22 ok</think><answer>(3*5)+7</answer>"
    g = task.grade(ex, good)
    assert g.correct and g.format_ok and g.extracted == "(3*5)+7"
    assert task.reward(ex, good) == (1.1, {"accuracy": 1.0, "format": 1.0})
    assert not task.grade(ex, "x</think><answer>3*5+7+0</answer>").correct  # extra number
    assert not task.grade(ex, "x</think><answer>(3+5)*7</answer>").correct  # wrong value
    assert not task.grade(ex, "x</think><answer>3*5+7*1</answer>").correct
    assert task.grade(ex, "x</think><answer>7+5*3</answer>").correct  # any order, precedence respected
    assert not task.grade(ex, "<answer>(3*5)+7</answer>").format_ok  # no </think>
    assert task.grade(ex, "<answer>(3*5)+7</answer>").correct  # accuracy does not need the format
    assert task.reward(ex, "")[0] == 0.0


def test_countdown_division_and_exact_fractions():
    assert evaluate_expression("(8/3)*3") == (8, [8, 3, 3])
    assert evaluate_expression("1/0") is None
    assert evaluate_expression("__import__('os')") is None
    assert evaluate_expression("2**99999") is None
    assert evaluate_expression("(" * 500 + "1" + ")" * 500) is None


def test_grading_model_text_prints_no_parser_warnings():
    import warnings

    from r1lab.rewards.sandbox.plan import program_names

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert evaluate_expression("5and 3") is None  # "invalid decimal literal" from the parser
        assert program_names('x = "\\d"\ndef f(): pass') == {"x", "f"}  # invalid escape
    assert not caught, [str(w.message) for w in caught]


def test_countdown_instances_are_solvable_and_splits_disjoint():
    task = get_task("countdown", test_size=300, train_size=2000)
    test, train = task.examples("test"), task.examples("train")
    assert len(test) == 300 and len(train) == 2000
    assert len({instance_key(tuple(e["nums"]), e["target"]) for e in test}) == 300  # distinct
    test_keys = {instance_key(tuple(e["nums"]), e["target"]) for e in test}
    assert not test_keys & {instance_key(tuple(e["nums"]), e["target"]) for e in train}
    for e in test[:50] + train[:50]:
        assert solutions(tuple(e["nums"]), e["target"])
    assert task.examples("test") == test  # deterministic


def test_worked_solutions_grade_as_written():
    rng = random.Random(0)
    task = get_task("countdown")
    style = CorpusStyle()
    retried = 0
    train = task.examples("train")[:100]
    for _ in range(300):
        ex = train[rng.randrange(100)]
        text = worked_solution(tuple(ex["nums"]), ex["target"], "en", rng, style)
        g = task.grade(ex, text)
        assert g.format_ok
        assert g.correct == text.split("</think>")[0].endswith(" ok")  # the check in the text is right
        retried += "wait" in text
    assert 0 < retried < 300


def test_corpus_is_deterministic_and_mixed():
    docs = corpus.documents(400, seed=1)
    assert docs == corpus.documents(400, seed=1)
    assert any("凑出" in d for d in docs) and any("Compute" in d for d in docs)
    assert all(d.count("<think>") == 1 and d.endswith("</answer>") for d in docs)


def test_arithmetic_grading():
    task = get_task("arithmetic", test_size=50, train_size=50)
    ex = task.examples("test")[0]
    assert task.grade(ex, f"...</think><answer>{ex['answer']}</answer>").correct
    assert not task.grade(ex, f"...</think><answer>{int(ex['answer']) + 1}</answer>").correct
    assert not task.grade(ex, "...</think><answer>1e999</answer>").correct


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_graders_are_total_on_hostile_text(text):
    ex = {"nums": [3, 5, 7], "target": 22, "expression": "3+4", "answer": "7"}
    for name in ("countdown", "arithmetic"):
        t0 = time.time()
        task = get_task(name)
        g = task.grade(ex, text)
        assert isinstance(g.correct, bool) and g.error is None
        g2 = task.grade(ex, f"</think><answer>{text}</answer>")
        assert isinstance(g2.correct, bool)
        assert time.time() - t0 < 1.0
    p = parse_response(text)
    assert isinstance(p.format_ok, bool)


def test_corpus_holds_every_kind_and_its_answers_match_its_checks():
    docs = corpus.documents(3000, seed=2)
    kinds = {"countdown": "make", "arithmetic": "Compute", "kk": "knaves always lie", "code": "Python function"}
    found = {k: [d for d in docs if v in d.split("\n<think>")[0]] for k, v in kinds.items()}
    assert all(len(v) > 50 for v in found.values()), {k: len(v) for k, v in found.items()}
    direct = [d for d in docs if "<think></think>" in d]
    assert 0.04 < len(direct) / len(docs) < 0.12  # the non-reasoning share (8%)
    assert any("骑士" in d for d in docs) and any("写一个" in d for d in docs)
