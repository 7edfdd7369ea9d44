"""`r1lab score`: grading RESPONSES.jsonl files, output rows, errors, and real-data acceptance."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1lab.commands import score
from r1lab.config import ConfigError, add_dataclass_args, build_config
from r1lab.data import DataError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED} is absent")


def write(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_score_gsm8k_small(tmp_path, capsys):
    src = write(
        tmp_path / "r.jsonl",
        [
            {
                "question": "q1",
                "answer": "3 + 4 = 7\n#### 7",
                "responses": ["</think><answer>7</answer>", "#### 8", "", None],
            },
            {
                "question": "q2",
                "answer": "12",
                "responses": ["the answer is 12", "12", "11", "x"],
                "lengths": [5, 6, 7, 8],
            },
        ],
    )
    out = tmp_path / "graded" / "out.jsonl"
    result = score.run(score.Config(responses=src, task="gsm8k", output=str(out)))
    assert result == last_json(capsys)
    assert result["n_problems"] == 2 and result["k"] == 4 and result["skipped"] == 0
    assert result["pass@1"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert result["cons@k"] == pytest.approx(1.0)  # votes: "7" (tie with "8", first), "12"
    assert "mean_length" not in result  # only one row has lengths
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["correct"] == [True, False, False, False]
    assert rows[0]["extracted"] == ["7", "8", None, None]
    assert rows[0]["format_ok"] == [True, False, False, False]
    assert rows[1]["question"] == "q2" and rows[1]["correct"] == [True, True, False, False]


def test_odd_text_round_trips(tmp_path, capsys):
    src = tmp_path / "u.jsonl"
    src.write_text('{"answer": "1", "responses": ["\\ud800 1", "等等 1"]}\n')
    out = tmp_path / "o.jsonl"
    score.run(score.Config(responses=str(src), output=str(out)))
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["responses"] == ["\ud800 1", "等等 1"] and row["correct"] == [True, True]


def test_score_math_batch(tmp_path, capsys):
    src = write(
        tmp_path / "m.jsonl",
        [
            {
                "answer": "\\frac{14}{3}",
                "responses": ["\\boxed{\\dfrac{14}{3}}", "\\boxed{4.6}", "\\boxed{14/3}"],
            },
            {
                "answer": "The point is \\boxed{(3, \\frac{\\pi}{2})}",
                "responses": ["\\boxed{\\left(3,\\frac{\\pi}{2}\\right)}"] * 3,
            },
        ],
    )
    result = score.run(score.Config(responses=src, task="math", timeout=2.0))
    assert result["pass@1"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["cons@k"] == 1.0 and result["pass@2"] == 1.0


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            {"answer": "1"},
            r"r\.jsonl:2: field 'responses': expected a non-empty list of strings, got missing",
        ),
        ({"answer": "1", "responses": []}, r"r\.jsonl:2: field 'responses'.*list of length 0"),
        ({"answer": "1", "responses": "1"}, r"r\.jsonl:2: field 'responses'.*got str"),
        (
            {"answer": "1", "responses": ["1", 2]},
            r"r\.jsonl:2: field 'responses'\[1\]: expected a string or null",
        ),
        ({"responses": ["1"]}, r"r\.jsonl:2: missing required field 'answer'"),
        ({"answer": "1", "responses": ["1"], "lengths": [1, 2]}, r"r\.jsonl:2: field 'lengths'"),
        ('{"answer": "1", "responses": [', r"r\.jsonl:2: malformed JSON"),
    ],
)
def test_bad_rows(tmp_path, capsys, bad, message):
    src = write(
        tmp_path / "r.jsonl", [{"answer": "1", "responses": ["1"]}, bad, {"answer": "2", "responses": ["3"]}]
    )
    with pytest.raises(DataError, match=message):
        score.run(score.Config(responses=src))
    result = score.run(score.Config(responses=src, skip_bad=True))
    assert result["skipped"] == 1 and result["n_problems"] == 2 and result["pass@1"] == 0.5


def test_nothing_to_score(tmp_path):
    with pytest.raises(DataError, match="no rows to score"):
        score.run(score.Config(responses=write(tmp_path / "e.jsonl", [])))
    with pytest.raises(DataError, match="not found"):
        score.run(score.Config(responses=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ConfigError):
        score.run(score.Config(responses="x.jsonl", task="chess"))


def test_flags_parse_like_the_cli(tmp_path):
    parser = argparse.ArgumentParser()
    for pos in score.POSITIONAL:
        parser.add_argument(pos, nargs="?", default=None)
    add_dataclass_args(parser, score.Config, skip=score.POSITIONAL)
    args = parser.parse_args(
        ["r.jsonl", "--task", "math", "--skip-bad", "--timeout", "2.5", "--output", "o.jsonl"]
    )
    cfg = build_config(score.Config, None, vars(args))
    assert (cfg.responses, cfg.task, cfg.skip_bad, cfg.timeout, cfg.output) == (
        "r.jsonl",
        "math",
        True,
        2.5,
        "o.jsonl",
    )


def test_cli(tmp_path, capsys):
    from r1lab import cli

    missing = [c for c in cli.COMMANDS if importlib.util.find_spec(f"r1lab.commands.{c}") is None]
    if missing:
        pytest.skip(f"`r1lab --help` imports every command; not written yet: {', '.join(missing)}")
    proc = subprocess.run(
        [sys.executable, "-m", "r1lab", "score", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0 and "--skip-bad" in proc.stdout
    bad = write(tmp_path / "bad.jsonl", [{"answer": [1], "responses": ["1"]}])
    assert cli.main(["score", bad]) == 2
    assert "bad.jsonl:1: field 'answer'" in capsys.readouterr().err


def _responses(tmp_path: Path, name: str, rows: list[dict], make) -> str:
    return write(tmp_path / name, [{**row, "responses": [make(i, row)]} for i, row in enumerate(rows)])


@needs_shared
def test_acceptance_gsm8k_reference_solutions(tmp_path, capsys):
    rows = [json.loads(line) for line in (SHARED / "gsm8k" / "test.jsonl").read_text().splitlines()]
    src = _responses(tmp_path, "g.jsonl", rows, lambda i, row: row["answer"])
    result = score.run(score.Config(responses=src, task="gsm8k"))
    assert result["n_problems"] == 1319 and result["pass@1"] == 1.0


@needs_shared
def test_acceptance_math500(tmp_path, capsys):
    rows = [json.loads(line) for line in (SHARED / "math500" / "test.jsonl").read_text().splitlines()]
    start = time.perf_counter()
    src = _responses(tmp_path, "m.jsonl", rows, lambda i, row: f"\\boxed{{{row['answer']}}}")
    assert score.run(score.Config(responses=src, task="math"))["pass@1"] >= 0.99
    shifted = _responses(
        tmp_path, "s.jsonl", rows, lambda i, row: f"\\boxed{{{rows[(i + 1) % len(rows)]['answer']}}}"
    )
    result = score.run(score.Config(responses=shifted, task="math"))
    assert result["pass@1"] <= 0.05 and result["n_problems"] == 500
    assert time.perf_counter() - start < 60
