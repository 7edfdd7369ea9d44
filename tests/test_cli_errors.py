"""Every command's bad input ends in ONE line on stderr naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from r1lab import cli

ROOT = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse errors exit through parser.error
        code = exc.code
    err = capsys.readouterr().err
    return code, err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def bad_recipe(tmp_path):
    def make(text: str) -> str:
        p = tmp_path / "r.toml"
        p.write_text(text)
        return str(p)

    return make


CASES = {
    # pretrain
    "pretrain: impossible steps": (["pretrain", "--steps", "0"], "steps"),
    "pretrain: wrong type flag": (["pretrain", "--steps", "ten"], "--steps"),
    "pretrain: unknown flag": (["pretrain", "--nope", "1"], "unrecognized arguments: --nope"),
    # eval
    "eval: unknown task": (["eval", "--task", "nope"], "unknown task 'nope'"),
    "eval: missing model": (["eval", "--model", "/no/such/model"], "/no/such/model"),
    "eval: missing data file": (["eval", "--task", "gsm8k", "--data", "/no/such.jsonl"], "/no/such.jsonl"),
    "eval: unknown language": (["eval", "--language", "xx"], "language 'xx'"),
    "eval: unknown template": (["eval", "--template", "fancy"], "template 'fancy'"),
    "eval: impossible k": (["eval", "--k", "0"], "k must be"),
    # score
    "score: missing file": (["score", "/no/such.jsonl", "--task", "gsm8k"], "/no/such.jsonl"),
    "score: no file given": (["score", "--task", "gsm8k"], "RESPONSES.jsonl"),
    "score: unknown task": (["score", "x.jsonl", "--task", "nope"], "unknown task 'nope'"),
    # zero
    "zero: unknown task": (["zero", "--task", "nope"], "unknown task 'nope'"),
    "zero: impossible minibatches": (["zero", "--minibatches", "3"], "minibatches"),
    "zero: ref refresh without KL": (["zero", "--ref-refresh", "10"], "beta"),
    "zero: unknown logger": (["zero", "--report-to", "mlflow"], "mlflow"),
    "zero: bad bool": (["zero", "--resume", "maybe"], "--resume"),
    "zero: missing model": (["zero", "--model", "./no-model-here"], "no-model-here"),
    "zero: missing recipe": (["zero", "--recipe", "/no/such.toml"], "/no/such.toml"),
    # sft
    "sft: no data": (["sft"], "--data"),
    "sft: missing data file": (["sft", "--data", "/no/such.jsonl"], "/no/such.jsonl"),
    "sft: bad template": (["sft", "--data", "x.jsonl", "--template", "fancy"], "template"),
    "sft: impossible epochs": (["sft", "--data", "x.jsonl", "--epochs", "0"], "epochs"),
    # sample
    "sample: unknown filter": (["sample", "--filters", "tags", "pretty"], "pretty"),
    "sample: impossible keep": (["sample", "--keep", "best"], "keep"),
    "sample: impossible k": (["sample", "--k", "0"], "k,"),
    # distill
    "distill: no teacher": (["distill"], "--teacher"),
    "distill: bad mode": (["distill", "--teacher", "x", "--mode", "offline"], "mode"),
    "distill: missing teacher": (["distill", "--teacher", "/no/teacher", "--student", "default"], "/no/teacher"),
    # r1
    "r1: unknown task": (["r1", "--task", "nope"], "unknown task 'nope'"),
    "r1: impossible stage size": (["r1", "--rl-steps", "0"], "stage sizes"),
    "r1: ppo stages": (["r1", "--algo", "ppo"], "grpo"),
    # tasks beyond countdown
    "eval: bad task option": (["eval", "--task", "knights_knaves", "--task-options", "max_people=99"], "max_people"),
    "eval: unknown mixture member": (["eval", "--task", "countdown:0.5,nope:0.5"], "unknown task 'nope'"),
    "eval: bad mixture weight": (["eval", "--task", "countdown:0,knights_knaves:1"], "> 0"),
    # report
    "report: missing dir": (["report", "/no/such/run"], "/no/such/run"),
    "report: no run dir given": (["report"], "run_dir"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2(name, capsys, tmp_path, monkeypatch):
    argv, needle = CASES[name]
    monkeypatch.chdir(tmp_path)  # nothing a failed command might write lands in the repo
    assert_one_line(*run_cli(argv, capsys), needle)


@pytest.mark.parametrize(("text", "needle"), [
    ("group_sise = 4\n", "group_sise"),  # unknown key
    ('steps = "ten"\n', "'steps' must be an integer"),  # wrong type
    ("lr = true\n", "'lr' must be a number"),
    ("reflection_words = 3\n", "must be a list"),
    ("steps = [\n", "invalid TOML"),
])
def test_bad_recipe_is_one_line_exit_2(text, needle, bad_recipe, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["zero", "--recipe", bad_recipe(text)], capsys)
    assert_one_line(code, err, needle, "r.toml")


def test_sft_malformed_row_names_file_line_field(tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n')
    code, err = run_cli(["sft", "--data", str(data), "--output-dir", str(tmp_path / "run")], capsys)
    assert_one_line(code, err, "rows.jsonl:2: field 'response'")


def test_zero_refuses_to_overwrite_a_checkpoint(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoint" / "policy").mkdir(parents=True)
    (out / "checkpoint" / "state.pt").write_bytes(b"")
    (out / "checkpoint" / "policy" / "config.json").write_text("{}")
    code, err = run_cli(["zero", "--model", tiny_model_dir, "--output-dir", str(out)], capsys)
    assert_one_line(code, err, "--resume")


def test_a_real_process_prints_no_traceback():
    out = subprocess.run([sys.executable, "-m", "r1lab", "eval", "--task", "nope"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 2
    from r1lab.tasks import TASKS

    assert out.stderr.strip() == f"r1lab eval: error: unknown task 'nope'; built-in tasks: {', '.join(TASKS)}"


@pytest.mark.parametrize(("name", "cmd"), [("sft", "sft"), ("sample", "sample"), ("distill", "distill"),
                                           ("r1", "r1"), ("zero", "zero"), ("zero-code", "zero"),
                                           ("drive", "drive"),
                                           ("drive-lm", "drive_lm")])
def test_shipped_recipes_parse(name, cmd):
    import importlib

    from r1lab.config import build_config

    mod = importlib.import_module(f"r1lab.commands.{cmd}")
    overrides = {"data": "rows.jsonl"} if cmd == "sft" else {"teacher": "t"} if cmd == "distill" else {}
    cfg = build_config(mod.Config, str(ROOT / "recipes" / f"{name}.toml"), overrides)
    assert cfg is not None
