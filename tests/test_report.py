"""Tests for `r1lab report`: a synthetic run directory -> HTML + Markdown + PNGs, hand-checked numbers.

    pytest tests/test_report.py -q

The fake run has 30 steps with growing response length and reflection rate; it "crashed" after
step 21 leaving a truncated line, then resumed from step 20, so steps 20 and 21 are logged twice.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from r1lab.cli import main
from r1lab.commands.report import Config, run
from r1lab.config import ConfigError
from r1lab.report.run import ema, load_run, read_jsonl, window_mean

PASS1 = {0: 0.12, 10: 0.20, 20: 0.31, 29: 0.45}
PLOT_NAMES = ("reward", "length", "reflection", "kl_clip", "time")


def _metrics(step: int, resumed: bool = False) -> dict:
    length = 20 + 3 * step
    return {
        "step": step,
        "reward": 0.1 + 0.02 * step + (0.05 if resumed else 0.0),
        "reward/accuracy": 0.02 * step,
        "reward/format": 0.1,
        "accuracy": 0.02 * step,
        "response_length": length,
        "response_length_max": 2 * length + 10,
        "reflection_rate": 0.01 * step,
        "kl": 0.001 * step,
        "clip_low": 0.01,
        "clip_high": 0.02,
        "time/rollout": 1.0 + 0.02 * step,
        "time/update": 0.5,
        "time/step": 1.7 + 0.02 * step,
        "tokens_per_s": 1000.0,
    }


def make_run(root: Path, with_eval: bool = True) -> Path:
    d = root / "run"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"task": "countdown", "lr": 3e-6, "group_size": 8}))
    lines = [json.dumps(_metrics(s)) for s in range(22)]  # lines 1-22: steps 0..21
    lines.append('{"step": 22, "rew')  # line 23: cut off by the crash
    lines += [json.dumps(_metrics(s, resumed=True)) for s in range(20, 30)]  # resume from step 20
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if with_eval:
        evals = [
            {"step": s, "pass@1": p, "cons@8": p + 0.05, "pass@8": p + 0.2, "mean_length": 25 + 3 * s}
            for s, p in PASS1.items()
        ]
        (d / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    samples = [
        {
            "step": s,
            "prompt": f"Q{s}.{i}: use 3, 5, 7 to make 22",
            "completion": f"<think>step {s}: 3 < 5 & 7 ``` wait</think> <answer>3*5+7</answer>",
            "reward": 1.1 if i == 0 else 0.1,
            "correct": i == 0,
        }
        for s in (0, 10, 20, 29)
        for i in range(4)
    ]
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    return d


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    run_dir = make_run(tmp_path_factory.mktemp("report"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        summary = run(Config(run_dir=str(run_dir)))
    return run_dir, summary, out.getvalue() + "\n--stderr--\n" + err.getvalue()


def test_files_exist(report: tuple[Path, dict, str]) -> None:
    run_dir, summary, _ = report
    out = run_dir / "report"
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    for name in PLOT_NAMES:
        assert (out / f"report_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["report_html"] == str(out / "report.html")


def test_html_sections_images_and_escaping(report: tuple[Path, dict, str]) -> None:
    run_dir, _, _ = report
    page = (run_dir / "report" / "report.html").read_text()
    for title in (
        "Summary",
        "Training curves",
        "Held-out evaluations",
        "Sample completions",
        "Configuration",
    ):
        assert f"<h2>{title}</h2>" in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(PLOT_NAMES)
    assert base64.b64decode(images[0])[:4] == b"\x89PNG"
    assert "src='http" not in page and "<script" not in page  # self-contained
    assert "&lt;think&gt;step 0: 3 &lt; 5 &amp; 7" in page and "<think>" not in page
    for heading in ("Early (step 0)", "Middle (step 10)", "Late (step 29)"):
        assert heading in page
    assert page.count("reward 1.1, correct: True") == 3  # one correct sample shown per stage
    assert "metrics.jsonl: skipped 1 malformed line(s): line 23" in page
    assert "<td>group_size</td><td>8</td>" in page


def test_markdown(report: tuple[Path, dict, str]) -> None:
    run_dir, _, _ = report
    md = (run_dir / "report" / "report.md").read_text()
    assert "![Reward and held-out pass@1](report_reward.png)" in md
    assert "| step | pass@1 | cons@8 | pass@8 | mean_length |" in md
    assert "````\n<think>step 0" in md  # fence longer than the ``` inside the completion


def test_summary_numbers(report: tuple[Path, dict, str]) -> None:
    _, summary, output = report
    assert summary["pass@1_first"] == pytest.approx(0.12)
    assert summary["pass@1_last"] == pytest.approx(0.45)
    assert summary["pass@1_change_points"] == pytest.approx(33.0)
    assert (summary["pass@1_first_step"], summary["pass@1_last_step"]) == (0, 29)
    assert summary["steps"] == 30 and summary["evals"] == 4 and summary["skipped_lines"] == 1
    # 30 steps -> windows of 3: lengths 20, 23, 26 and 101, 104, 107
    assert summary["response_length_first10pct"] == pytest.approx(23.0)
    assert summary["response_length_last10pct"] == pytest.approx(104.0)
    assert summary["reflection_rate_first10pct"] == pytest.approx(0.01)
    assert summary["reflection_rate_last10pct"] == pytest.approx(0.28)
    stdout, stderr = output.split("\n--stderr--\n")
    assert json.loads(stdout.strip().splitlines()[-1]) == summary
    assert "+33.0 points" in stdout and "line 23" in stderr


def test_resumed_step_keeps_last_occurrence(report: tuple[Path, dict, str]) -> None:
    run_dir, _, _ = report
    data = load_run(run_dir)
    steps = [r["step"] for r in data.metrics]
    assert steps == list(range(30))
    assert data.metrics[21]["reward"] == pytest.approx(0.1 + 0.02 * 21 + 0.05)  # the resumed value
    assert data.metrics[19]["reward"] == pytest.approx(0.1 + 0.02 * 19)
    assert data.skipped == {"metrics.jsonl": [23]}
    assert any("2 step(s) logged more than once" in n for n in data.notes)


def test_no_eval_via_cli_with_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = make_run(tmp_path, with_eval=False)
    (run_dir / "samples.jsonl").unlink()
    out = tmp_path / "elsewhere" / "zero.html"
    assert main(["report", str(run_dir), "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["pass@1_first"] is None and summary["evals"] == 0
    page = out.read_text()
    assert "No held-out evaluations (eval.jsonl missing or empty)" in page
    assert "eval.jsonl not found" in page and "No samples" in page
    assert (tmp_path / "elsewhere" / "zero.md").is_file()
    assert (tmp_path / "elsewhere" / "zero_length.png").is_file()


def test_missing_run_dir_or_metrics(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        run(Config(run_dir=str(missing)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="metrics.jsonl"):
        run(Config(run_dir=str(empty)))
    with pytest.raises(ConfigError):
        run(Config())
    assert main(["report", str(missing)]) == 2


def test_pure_helpers(tmp_path: Path) -> None:
    assert ema([0.0, 10.0, 10.0], span=3) == [0.0, 5.0, 7.5]
    assert ema([1.0, 2.0], span=1) == [1.0, 2.0]
    assert window_mean([float(x) for x in range(30)]) == 1.0
    assert window_mean([float(x) for x in range(30)], last=True) == 28.0
    assert window_mean([5.0]) == 5.0 and window_mean([]) is None
    path = tmp_path / "x.jsonl"
    path.write_text('{"step": 1}\n\n[1, 2]\nnot json\n{"step": 2}\n')
    rows, bad = read_jsonl(path)
    assert rows == [{"step": 1}, {"step": 2}] and bad == [3, 4]
