"""Knights and Knaves: truth tables by hand, unique solutions, the answer parser, file rows, splits."""

from __future__ import annotations

import json
import random
import re

import pytest

from r1lab.config import ConfigError
from r1lab.data import DataError
from r1lab.tasks import get_task
from r1lab.tasks.knights_knaves import (
    NAMES as KK_NAMES,
)
from r1lab.tasks.knights_knaves import (
    KKStyle,
    answer_text,
    consistent,
    parse_roles,
    pick_names,
    quiz_text,
    random_puzzle,
    read_statements,
    render,
    solutions,
    split_of,
    truth,
    worked_solution,
)

A, B, C = 0, 1, 2
NAMES = ["Zoey", "Oliver", "Ava"]


def test_truth_by_hand():
    knight_knave = (True, False)
    assert truth(("is", A, True), knight_knave) and not truth(("is", B, True), knight_knave)
    assert truth(("not", ("is", B, True)), knight_knave)
    s_and, s_or = ("and", ("is", A, True), ("is", B, True)), ("or", ("is", A, True), ("is", B, True))
    assert not truth(s_and, knight_knave) and truth(s_or, knight_knave)
    assert not truth(("iff", ("is", A, True), ("is", B, True)), knight_knave)
    assert not truth(("implies", ("is", A, True), ("is", B, True)), knight_knave)  # T -> F
    assert truth(("implies", ("is", B, True), ("is", A, False)), knight_knave)  # F -> anything


def test_names_are_distinct_and_in_list_order():
    rng = random.Random(0)
    for lang in ("en", "zh"):
        for n in (2, 5, 8):
            names = pick_names(rng, n, lang)
            assert len(set(names)) == n and names == sorted(names, key=KK_NAMES[lang].index)
    drawn = {tuple(pick_names(rng, 3, "en")) for _ in range(200)}
    assert len(drawn) > 100  # still many casts, only their order is fixed


def test_classic_puzzle_has_one_solution():
    # Zoey: "Oliver is a knave."  Oliver: "Zoey and I are both knights."  -> Zoey knight, Oliver knave
    statements = [("is", B, False), ("and", ("is", A, True), ("is", B, True))]
    assert solutions(statements) == [(True, False)]
    assert consistent(statements, (True, False)) and not consistent(statements, (False, True))
    # "I am a knave" has no consistent assignment; "I am a knight" has two
    assert solutions([("is", A, False)]) == []
    assert solutions([("is", A, True)]) == [(True,), (False,)]


def test_render_is_unambiguous():
    s = ("or", ("and", ("is", A, True), ("is", B, False)), ("not", ("is", C, True)))
    assert render(s, NAMES, "en") == "(Zoey is a knight and Oliver is a knave) or Ava is not a knight"
    assert render(s, NAMES, "zh") == "(Zoey是骑士并且Oliver是无赖)或者Ava不是骑士"


@pytest.mark.parametrize(("text", "want"), [
    ("(1) Zoey is a knight\n(2) Oliver is a knave\n(3) Ava is a knight", [True, False, True]),
    ("Zoey is a knight, Oliver is a knave and Ava is a knight.", [True, False, True]),
    ("zoey is a Knight. oliver IS A KNAVE. ava is not a knave", [True, False, True]),
    ("Zoey是骑士，Oliver是无赖，Ava是骑士", [True, False, True]),
    ("Zoey: knight\nOliver: knave\nAva: knight", [True, False, True]),
    ("Zoey - knight, Oliver = a knave, Ava: Knight", [True, False, True]),
    ("Zoey and Ava are knights, while Oliver is a knave.", [True, False, True]),
    ("Both Zoey and Ava are knights; Oliver is the knave.", [True, False, True]),
    ("Zoey, Oliver, and Ava are all knaves", [False, False, False]),
    ("Zoey and Ava are not knaves, Oliver is not a knight", [True, False, True]),
])
def test_parse_roles_forms(text, want):
    roles = parse_roles(text, NAMES)
    assert [roles[x] for x in NAMES] == want


def test_parse_roles_conflicts_and_whole_names():
    assert parse_roles("Zoey is a knight. Zoey is a knave.", NAMES) is None
    assert parse_roles("William is a knave", ["Liam"]) == {}  # Liam is not inside William
    assert parse_roles("Oliver is a knight", NAMES) == {"Oliver": True}
    assert parse_roles("Zoey and Oliver are knights. Oliver is a knave.", NAMES) is None


def test_answers_without_tags():
    task = get_task("knights_knaves")  # the short template: the prompt opens <think>
    ex = {"names": NAMES, "solution": [True, False, True], "quiz": ""}
    right = "Zoey is a knight, Oliver is a knave and Ava is a knight."
    assert task.grade(ex, "Let me see.\n</think>\n" + right).correct  # after the reasoning
    assert not task.grade(ex, right).correct  # never left the think block
    task = get_task("knights_knaves", template="plain")  # a model that answers without tags
    trials = "Suppose Zoey is a knave. Then Oliver is a knight, a contradiction.\n\n"
    assert task.grade(ex, trials + right).correct  # the last paragraph, not the trial in the first
    assert not task.grade(ex, right + "\n\n" + trials).correct  # an answer then more reasoning: not an answer
    assert not task.grade(ex, "Zoey is a knight.").correct  # not every name


def test_grading_a_generated_puzzle():
    task = get_task("knights_knaves")
    ex = task.examples("test")[0]
    good = "ok</think><answer>" + ex["answer"] + "</answer>"
    g = task.grade(ex, good)
    assert g.correct and g.format_ok and g.extracted == ",".join("knight" if k else "knave" for k in ex["solution"])
    flipped = answer_text(ex["names"], [not k for k in ex["solution"]])
    assert not task.grade(ex, "</think><answer>" + flipped + "</answer>").correct
    partial = "\n".join(ex["answer"].splitlines()[:-1])  # one person left out
    assert not task.grade(ex, "</think><answer>" + partial + "</answer>").correct
    assert not task.grade(ex, ex["answer"]).correct  # no answer tags: nothing extracted
    assert task.reward(ex, good)[0] == pytest.approx(1.1)


def test_generator_is_unique_deterministic_and_split_by_hash():
    task = get_task("knights_knaves", min_people=2, max_people=5, max_depth=3, train_size=300, test_size=50)
    train, test = task.examples("train"), task.examples("test")
    assert train == task.examples("train")  # same seed, same puzzles
    for ex in train[:50] + test:
        st = [_tuple(s) for s in ex["statements"]]
        assert solutions(st) == [tuple(ex["solution"])]
        assert 2 <= ex["people"] <= 5
    assert {json.dumps(e["statements"]) for e in train}.isdisjoint(json.dumps(e["statements"]) for e in test)
    assert all(split_of([_tuple(s) for s in e["statements"]]) == "test" for e in test)


def test_worked_solution_ends_on_the_answer():
    rng = random.Random(3)
    statements, sol = random_puzzle(rng, 3, 2)
    text = worked_solution(statements, NAMES, "en", random.Random(0))  # retries until it works
    right = ", ".join(f"{x} {'knight' if k else 'knave'}" for x, k in zip(NAMES, sol))
    trace, answer = text.split("</think>")
    assert trace.endswith(f"try {right}: Zoey ok Oliver ok Ava ok works")
    assert answer == "<answer>" + answer_text(NAMES, list(sol)) + "</answer>"
    gave_up = worked_solution(statements, NAMES, "en", random.Random(5), KKStyle(first_correct=0.0, retry=0.0))
    assert " no</think>" in gave_up and "works" not in gave_up  # one wrong try, then a wrong answer


def test_a_retry_flips_the_person_whose_statement_failed():
    # every pair of consecutive tries in 20 generated puzzles, read back from the trace's text
    rng, flips = random.Random(11), 0
    for _ in range(20):
        statements, sol = random_puzzle(rng, 3, 2)
        text = worked_solution(statements, NAMES, "en", random.Random(rng.random()),
                               KKStyle(first_correct=0.0, retry=1.0, max_tries=8))
        trace = text.split("</think>")[0]
        tries = [([r == "knight" for r in re.findall(r"(knight|knave)", roles)], checks)
                 for roles, checks in re.findall(r"try ([\w ,]+): ([^:]*?)(?= wait|$)", trace)]
        for n, ((before, checks), (now, _)) in enumerate(zip(tries, tries[1:])):
            failed = NAMES.index(checks.split(" no")[0].split()[-1])
            flipped = [not r if i == failed else r for i, r in enumerate(before)]
            seen = [t for t, _ in tries[: n + 1]]
            if flipped not in seen:  # an untried flip is always the next try
                assert now == flipped
                flips += 1
            assert now not in seen  # and no try is repeated
    assert flips > 10


def test_rows_from_a_file(tmp_path):
    rows = [{"quiz": "Zoey says Oliver is a knave. Oliver says Zoey and he are knights.", "names": ["Zoey", "Oliver"],
             "solution": [True, False]}]
    path = tmp_path / "kk.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("knights_knaves", data=str(path))
    ex = task.examples("test")[0]
    assert task.prompt(ex).startswith("Zoey says")
    assert task.grade(ex, "</think><answer>(1) Zoey is a knight\n(2) Oliver is a knave</answer>").correct
    path.write_text(json.dumps({"quiz": "q", "names": ["Zoey"], "solution": ["yes"]}) + "\n")
    with pytest.raises(DataError, match=r"kk.jsonl:1: field .solution."):
        get_task("knights_knaves", data=str(path)).examples("test")


def test_impossible_options():
    with pytest.raises(ConfigError, match="max_people"):
        get_task("knights_knaves", min_people=4, max_people=3)
    with pytest.raises(ConfigError, match="max_depth"):
        get_task("knights_knaves", max_depth=1)


def _tuple(s):
    return tuple(_tuple(x) if isinstance(x, list) else x for x in s)


def test_corpus_style_answers_are_right_exactly_when_the_trace_works():
    rng = random.Random(11)
    task = get_task("knights_knaves")
    seen = {True: 0, False: 0}
    for _ in range(150):
        statements, sol = random_puzzle(rng, rng.randint(2, 4), 2)
        names = NAMES[: len(sol)] if len(sol) <= 3 else NAMES + ["Liam"]
        text = worked_solution(statements, names, "en", rng, KKStyle(retry=0.5))
        ex = {"names": names, "solution": list(sol), "quiz": ""}
        works = text.split("</think>")[0].endswith("works")
        assert task.grade(ex, text).correct == works
        seen[works] += 1
    assert seen[True] > 20 and seen[False] > 20  # both kinds occur


def test_statements_of_the_published_sets_are_read():
    # K-and-K's form (mem-kk-logic): ('telling-truth', i), ('lying', i), not, and/or (2+ parts), ->, <=>
    text = "(('or', ('telling-truth', 1), ('lying', 1), ('lying', 2)), ('<=>', ('lying', 0), ('lying', 2)), " \
           "('->', ('not', ('lying', 1)), ('telling-truth', 0)))"
    got = read_statements(text, 3)
    assert got == [("or", ("or", ("is", 1, True), ("is", 1, False)), ("is", 2, False)),
                   ("iff", ("is", 0, False), ("is", 2, False)),
                   ("implies", ("not", ("is", 1, False)), ("is", 0, True))]
    # r1lab's own rows (nested lists) read the same way
    ours = [["and", ["is", 1, False], ["not", ["is", 2, True]]], ["is", 0, True]]
    assert read_statements(ours, 2) is None  # a person out of range for 2 people
    assert read_statements(ours, 3) is None  # three people need three statements
    assert read_statements(ours + [["is", 1, True]], 3)[0] == ("and", ("is", 1, False), ("not", ("is", 2, True)))
    for bad in ["(('lying', 5),)", "__import__('os').system('true')", "((('xor', 1, 2)),)", "(", None, 7]:
        assert read_statements(bad, 1) is None


def test_a_published_row_gets_a_demonstration_when_its_solution_agrees(tmp_path):
    statements, sol = random_puzzle(random.Random(2), 3, 2)

    def kk_form(s):
        if s[0] == "is":
            return ("telling-truth" if s[2] else "lying", s[1])
        return ({"implies": "->", "iff": "<=>"}.get(s[0], s[0]),) + tuple(kk_form(x) for x in s[1:])

    row = {"quiz": quiz_text(statements, NAMES, "en"), "names": NAMES, "solution": list(sol),
           "statements": repr(tuple(kk_form(s) for s in statements))}
    path = tmp_path / "kk.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "solution": [not x for x in sol]}) + "\n")
    task = get_task("knights_knaves", data=str(path))
    good, wrong = task.examples("test")
    demo = task.demonstration(good, random.Random(0))
    assert demo is not None and task.grade(good, demo).correct
    assert task.demonstration(wrong, random.Random(0)) is None  # statements and solution disagree
    assert task.demonstration({**good, "statements": "not a literal"}, random.Random(0)) is None
