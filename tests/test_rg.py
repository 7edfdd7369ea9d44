"""The reasoning-gym adapter (``rg:NAME``): splits, grading through the scoring worker, hostile
answers contained, partial credit, ``r1lab score`` end to end. Skipped without reasoning-gym."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("reasoning_gym", reason="needs the optional extra: pip install 'r1lab[rg]'")

from reasoning_gym import create_dataset  # noqa: E402

from r1lab.config import ConfigError  # noqa: E402
from r1lab.tasks import check_spec, get_task  # noqa: E402
from r1lab.tasks.rg import TEST_SEED_OFFSET  # noqa: E402
from r1lab.tasks.rg_worker import ScoreWorker, worker_for  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LISTED = ("knights_knaves", "countdown", "basic_arithmetic", "propositional_logic", "graph_color")
_TASKS: dict[str, object] = {}


def task(name: str, **kw):
    """One small task per dataset, shared by the tests (countdown generates ~20 ms a problem)."""
    key = name + json.dumps(kw, sort_keys=True)
    if key not in _TASKS:
        _TASKS[key] = get_task(f"rg:{name}", train_size=12, test_size=4, grader_timeout=2.0, **kw)
    return _TASKS[key]


def tagged(answer: str) -> str:
    return f" some reasoning </think> <answer>{answer}</answer>"


def correct_answer(name: str, example: dict) -> str:
    """The dataset's gold where it has one, else a solution from the metadata."""
    if example["answer"] is not None:
        return example["answer"]
    if name == "propositional_logic":
        return example["metadata"]["example_answer"]
    if name == "graph_color":
        return json.dumps(example["metadata"]["possible_answer"])
    raise AssertionError(name)


def roles(example: dict, flip: int) -> str:
    """A knights_knaves answer with the first ``flip`` people's roles flipped."""
    meta = example["metadata"]
    terms = meta["knight_knave_terms"]
    return ", and ".join(f"{n} is a {terms['knight'] if (good != (i < flip)) else terms['knave']}"
                         for i, (n, good) in enumerate(zip(meta["names"], meta["solution"])))


def wrong_answer(name: str, example: dict) -> str | None:
    """A wrong answer, or None where none exists (propositional_logic premises that contradict
    each other, about 1 in 5 problems here: then every formula follows and scores 1.0)."""
    meta = example["metadata"]
    if name == "knights_knaves":  # every role flipped
        return roles(example, len(meta["names"]))
    if name == "countdown":
        return "+".join(str(n) for n in meta["numbers"]) + "+1"
    if name == "basic_arithmetic":
        return str(int(float(example["answer"])) + 1)
    if name == "propositional_logic":
        v = meta["variables"][0]
        contradiction = f"({v} ∧ ¬{v})"
        consistent = create_dataset(name, size=1, seed=0).score_answer(contradiction, example) < 1.0
        return contradiction if consistent else None
    colors = {str(v): meta["puzzle"]["color_options"][0] for v in meta["puzzle"]["vertices"]}  # one colour
    return json.dumps(colors)


@pytest.mark.parametrize("name", LISTED)
def test_correct_and_wrong_answers_through_the_whole_path(name):
    t = task(name)
    examples = t.examples("test")
    assert len(examples) == 4
    json.dumps(examples)  # plain JSON, as eval.json stores them
    right = [tagged(correct_answer(name, ex)) for ex in examples]
    has_wrong = [ex for ex in examples if wrong_answer(name, ex) is not None]
    assert len(has_wrong) >= 2
    wrong = [tagged(wrong_answer(name, ex)) for ex in has_wrong]
    n = len(wrong)
    grades = t.grade_many(examples + has_wrong, right + wrong)
    assert [(g.correct, g.error) for g in grades[:4]] == [(True, None)] * 4, grades[:4]
    assert all(g.format_ok for g in grades)
    assert not any(g.correct for g in grades[4:]) and all(g.score < 1.0 for g in grades[4:]), grades[4:]
    # the same from score-file rows: JSON fields only, no rg_source (the entry is rebuilt from the row)
    rows = [{k: v for k, v in ex.items() if k != "rg_source"} for ex in examples + has_wrong]
    assert [g.correct for g in t.grade_many(rows, right + wrong)] == [True] * 4 + [False] * n


def test_gold_and_metadata_facts_per_dataset():
    has_gold = {name: task(name).examples("test")[0]["answer"] is not None for name in LISTED}
    assert has_gold == {"knights_knaves": True, "countdown": True, "basic_arithmetic": True,
                        "propositional_logic": False, "graph_color": False}
    assert [task(n).needs_answer for n in LISTED] == [True, True, True, False, False]


def test_no_answer_tag_is_wrong_and_spaces_are_kept():
    t = task("knights_knaves")
    ex = t.examples("test")[0]
    g = t.grade(ex, ex["answer"])  # the right words, but no <answer> tags
    assert not g.correct and g.extracted is None and g.error is None
    assert t.extract(tagged(ex["answer"])) == ex["answer"] and " " in ex["answer"]
    assert t.grade(ex, None).correct is False


def test_partial_credit_is_logged_and_rewarded_only_when_asked():
    ex = task("knights_knaves").examples("test")[0]
    off, on = task("knights_knaves"), task("knights_knaves", partial_credit=True)
    assert len(ex["metadata"]["names"]) == 2 and off.grade(ex, tagged(roles(ex, 0))).correct
    first_flipped = roles(ex, 1)
    value, comps = off.reward(ex, tagged(first_flipped))
    assert comps["accuracy"] == 0.0 and comps["partial"] == pytest.approx(0.3 + 0.7 / 2)
    assert value == pytest.approx(off.options.format_weight)  # partial credit not rewarded by default
    value_on, comps_on = on.reward(ex, tagged(first_flipped))
    assert comps_on["accuracy"] == 0.0 and value_on == pytest.approx(0.65 + on.options.format_weight)
    assert off.reward(ex, tagged(ex["answer"]))[0] == pytest.approx(1.0 + off.options.format_weight)


def test_splits_are_deterministic_disjoint_and_seeded():
    a, b = task("basic_arithmetic"), get_task("rg:basic_arithmetic", train_size=12, test_size=4)
    assert a.examples("train") == b.examples("train") and a.examples("test") == b.examples("test")
    train_q = {ex["question"] for ex in a.examples("train")}
    test_q = [ex["question"] for ex in a.examples("test")]
    assert not train_q & set(test_q) and len(set(test_q)) == len(test_q)
    other = get_task("rg:basic_arithmetic", train_size=12, test_size=4, seed=99)
    assert other.examples("train") != a.examples("train")
    assert a.examples("test")[0]["rg_source"]["seed"] == 1234 + TEST_SEED_OFFSET
    # why not seed + 1 for the test split: reasoning-gym seeds item i with seed + i
    assert create_dataset("basic_arithmetic", size=3, seed=8)[0]["question"] == \
        create_dataset("basic_arithmetic", size=3, seed=7)[1]["question"]


def test_test_split_drops_questions_seen_in_train():
    t = get_task("rg:basic_arithmetic", train_size=300, test_size=40,
                 config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1})
    train_q = {ex["question"] for ex in t.examples("train")}
    test = t.examples("test")
    assert t.dropped_overlap > 0  # a small problem space: overlaps happen and are replaced
    assert len(test) == 40 and not train_q & {ex["question"] for ex in test}


def test_hostile_answers_are_contained(tmp_path):
    """countdown's scorer hands the answer to sympy's parse_expr, which evals it."""
    canary = tmp_path / "canary"
    t = task("countdown")
    ex = t.examples("test")[0]
    rg = create_dataset("countdown", size=1, seed=0)
    touch = f"__import__('pathlib').Path({str(canary)!r}).touch()"
    rg.score_answer(touch, ex)  # the control: scored in process, the answer runs
    assert canary.exists()
    canary.unlink()
    hostile = [f"__import__('os').system('touch {canary}')", touch,
               "__import__('os').kill(__import__('os').getppid(), 0)", "9**9**9**9", "10**10**10",
               "exit()", "(" * 2000 + "1" + ")" * 2000, "[0]*10**9"]
    t0 = time.monotonic()
    grades = t.grade_many([ex] * (len(hostile) + 1), [tagged(h) for h in hostile] + [tagged(ex["answer"])])
    elapsed = time.monotonic() - t0
    assert not canary.exists()
    assert not any(g.correct for g in grades[:-1]) and grades[-1].correct
    assert [g.error for g in grades[:3]] == ["refused in the scoring worker: os.system",
                                              "refused in the scoring worker: open, os.utime",
                                              "refused in the scoring worker: os.kill"]
    assert grades[3].error == grades[4].error == "timeout"
    assert elapsed < 2.0 * (2 + 1) + 3  # two timeouts of 2 s each, the rest fast


def test_a_hung_or_dead_worker_is_replaced_and_the_batch_goes_on():
    t = task("countdown")
    ex = t.examples("test")[0]
    worker = worker_for("countdown", {}, 1024)
    hang = "[__import__('signal').signal(14, 1), __import__('time').sleep(60)]"  # no soft timeout: hard kill
    before = worker.restarts
    t0 = time.monotonic()
    grades = t.grade_many([ex] * 4, [tagged(x) for x in (hang, ex["answer"], "__import__('os')._exit(3)",
                                                        ex["answer"])])
    assert time.monotonic() - t0 < 2.0 + 15  # the 2 s deadline, plus two worker restarts
    assert [(g.correct, g.error) for g in grades] == [(False, "timeout"), (True, None),
                                                     (False, "error: scoring worker died"), (True, None)]
    assert worker.restarts == before + 2


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads the worker's limits from Linux /proc")
def test_worker_runs_isolated_with_rlimits():
    t = task("basic_arithmetic")
    t.grade(t.examples("test")[0], tagged("1"))
    worker = worker_for("basic_arithmetic", {}, 1024)
    pid = worker._proc.pid
    assert pid != os.getpid() and os.getpgid(pid) == pid  # its own process group: killed as a whole
    limits = Path(f"/proc/{pid}/limits").read_text()
    line = {row[:26].strip(): row[26:].split() for row in limits.splitlines()[1:]}
    assert line["Max address space"][:2] == [str(1024 * 2**20)] * 2
    assert line["Max file size"][:2] == ["0", "0"] and line["Max core file size"][:2] == ["0", "0"]
    assert line["Max cpu time"][0] != "unlimited"
    assert b"-I" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    env = dict(kv.split(b"=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if kv)
    assert set(env) <= {b"PATH", b"HOME", b"TMPDIR", b"LANG", b"MPLBACKEND", b"OMP_NUM_THREADS",
                        b"OPENBLAS_NUM_THREADS", b"MKL_NUM_THREADS"}  # nothing of the trainer's environment
    cwd = os.readlink(f"/proc/{pid}/cwd")
    assert Path(cwd).name.startswith("r1lab-rg-") and cwd != os.getcwd()  # its own temp dir (also its HOME)


def test_one_worker_round_trip_per_batch(monkeypatch):
    t = task("basic_arithmetic")
    ex = t.examples("test")
    sent = []
    original = ScoreWorker._send
    monkeypatch.setattr(ScoreWorker, "_send", lambda self, req: sent.append(req) or original(self, req))
    grades = t.grade_many(ex * 8, [tagged(e["answer"]) for e in ex * 8])
    assert all(g.correct for g in grades) and len(sent) == 1 and len(sent[0]["items"]) == 32


def test_rows_without_metadata_are_errors_not_exceptions():
    t = task("basic_arithmetic")
    g = t.grade({"question": "1+1", "answer": "2"}, tagged("2"))
    assert not g.correct and "metadata" in g.error


def test_config_errors():
    with pytest.raises(ConfigError, match="did you mean knights_knaves"):
        get_task("rg:knight_knaves")
    with pytest.raises(ConfigError, match="did you mean knights_knaves"):
        check_spec("countdown:0.5,rg:knight_knaves:0.5")
    check_spec("rg:graph_color")
    with pytest.raises(ConfigError, match="bad dataset config"):
        get_task("rg:countdown", config={"no_such_field": 1})
    with pytest.raises(ConfigError, match="seed"):
        get_task("rg:countdown", config='{"seed": 3}')
    with pytest.raises(ConfigError, match="no option"):
        get_task("rg:countdown", no_such_option=1)


def test_missing_reasoning_gym_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)
    with pytest.raises(ConfigError, match=r"pip install 'r1lab\[rg\]'"):
        get_task("rg:countdown")
    with pytest.raises(ConfigError, match=r"pip install 'r1lab\[rg\]'"):
        check_spec("rg:countdown")


def test_r1lab_score_end_to_end(tmp_path):
    t = task("basic_arithmetic")
    rows = [dict(ex, responses=[tagged(ex["answer"]), tagged("x"), None]) for ex in t.examples("test")]
    rows[0].pop("rg_source")
    path, out = tmp_path / "responses.jsonl", tmp_path / "graded.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "r1lab", "score", str(path), "--task", "rg:basic_arithmetic", "--output"]
    cmd.append(str(out))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n_problems"] == 4 and result["pass@1"] == pytest.approx(1 / 3) and result["cons@k"] == 1.0
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in graded] == [[True, False, False]] * 4


def test_score_rows_without_gold_for_datasets_that_have_none(tmp_path):
    from r1lab.commands.score import Config, run

    t = task("graph_color")
    rows = []
    for ex in t.examples("test"):
        row = {k: v for k, v in ex.items() if k != "answer"}
        rows.append(dict(row, responses=[tagged(correct_answer("graph_color", ex)), tagged("{}")]))
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run(Config(responses=str(path), task="rg:graph_color"))
    assert result["pass@1"] == pytest.approx(0.5) and result["grader_errors"] == 0


def test_original_entries_reach_scorers_that_compare_tuples():
    """rearc's scorer compares the parsed board (tuples) with metadata tuples that JSON makes lists:
    the pickled original entry scores the gold 1.0, the JSON copy of the same row would not."""
    t = get_task("rg:rearc", train_size=2, test_size=2)
    ex = t.examples("test")[0]
    row = {k: v for k, v in ex.items() if k != "rg_source"}
    gold, json_only = t.grade_many([ex, row], [tagged(ex["answer"])] * 2)
    assert gold.correct and gold.error is None
    assert not json_only.correct and json_only.score < 1.0
