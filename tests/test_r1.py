"""`r1lab r1`: the four stages end to end at smoke size, resumed after kill -9 inside stages 2 and 3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from r1lab.commands.r1 import STAGES, Config
from r1lab.config import build_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--task", "countdown", "--final-task", "countdown:0.5,arithmetic:0.5", "--cold-start-rows", "60",
         "--sft-epochs", "1", "--tokens-per-step", "2048", "--rl-steps", "4", "--prompts-per-step", "2",
         "--group-size", "4", "--max-new-tokens", "48", "--rs-prompts", "24", "--rs-k", "4", "--final-steps", "2",
         "--eval-problems", "4", "--eval-k", "1", "--save-every", "1", "--report-to", "none", "--threads", "1"]


def test_recipe_parses():
    cfg = build_config(Config, str(REPO / "recipes" / "r1.toml"), {})
    assert cfg.rl_steps == 60 and cfg.final_temperature == 0.7 and cfg.task.startswith("countdown")


def _wait_for(path: Path, lines: int, proc, deadline: float) -> None:
    while time.time() < deadline and proc.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= lines:
            return
        time.sleep(0.1)


def test_r1_runs_and_resumes_after_kill_9_in_stages_2_and_3(tmp_path):
    out = tmp_path / "r1"
    args = [sys.executable, "-m", "r1lab", "r1", *SMOKE, "--output-dir", str(out)]
    deadline = time.time() + 600
    for where in ("2-reasoning-rl", "3-rejection-sft"):
        proc = subprocess.Popen(args + (["--resume"] if out.exists() else []), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for(out / where / "metrics.jsonl", 1, proc, deadline)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (out / where / "summary.json").exists()  # killed inside the stage
    first = (out / STAGES[0] / "summary.json").stat().st_mtime
    res = subprocess.run(args + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / STAGES[0] / "summary.json").stat().st_mtime == first  # a finished stage is never redone
    for name in STAGES:
        assert (out / name / "final" / "model.safetensors").is_file(), name
    steps = [json.loads(x)["step"] for x in (out / "2-reasoning-rl" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]  # resumed, no step twice
    rows = [json.loads(x) for x in (out / "r1_stages.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == list(STAGES)
    assert all("countdown/pass@1" in r and "language_consistency" in r for r in rows)
    report = (out / "r1_report.md").read_text()
    assert "| pass@1 |" in report and "4-all-rl" in report
    sel = json.loads((out / "3-rejection-sft" / "summary.json").read_text())["selection"]
    assert sel["added"]["non_reasoning"] >= 0 and "removed" in sel


def test_each_rl_stage_gets_its_language_weight(tmp_path, monkeypatch):
    from r1lab.commands import r1

    seen = {}

    def done(d):
        d.mkdir(parents=True)
        return {"final_model": str(d)}

    def fake_rl(cfg, src, d, task_spec, steps, temperature, language_weight, device):
        seen[d.name] = (task_spec, temperature, language_weight)
        return done(d)

    monkeypatch.setattr(r1, "resolve_model", lambda m: "base")
    monkeypatch.setattr(r1, "cold_start", lambda cfg, base, d, device: done(d))
    monkeypatch.setattr(r1, "rejection_sft", lambda cfg, m2, base, d, device: done(d))
    monkeypatch.setattr(r1, "rl_stage", fake_rl)
    monkeypatch.setattr(r1, "held_out", lambda cfg, model, device: {"pass@1": 0.5})
    for out, flags, want in (("a", {}, (0.2, 0.2)), ("b", {"final_language_weight": 0.0}, (0.2, 0.0))):
        cfg = Config(output_dir=str(tmp_path / out), report_to="none", **flags)
        r1.run(cfg)
        assert (seen["2-reasoning-rl"][2], seen["4-all-rl"][2]) == want
        assert seen["4-all-rl"][1] == 0.7
