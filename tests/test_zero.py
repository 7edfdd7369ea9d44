"""`r1lab zero` smoke runs on a tiny model: files, resume (also after kill -9), faults, config checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from r1lab.commands.zero import Config, run
from r1lab.config import ConfigError, build_config
from r1lab.rewards.safe import RewardRunner, overlong_penalty
from r1lab.tasks import get_task

REPO = Path(__file__).resolve().parents[1]


def small(model: str, out: Path, **kw) -> Config:
    base = dict(model=model, output_dir=str(out), steps=2, prompts_per_step=2, group_size=4, max_new_tokens=16,
                eval_problems=3, eval_k=2, eval_every=0, report_to="none", micro_batch=4)
    base.update(kw)
    return Config(**base)


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_zero_writes_a_complete_run(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    summary = run(small(tiny_model_dir, tmp_path / "run", steps=2, sample_every=1))
    d = tmp_path / "run"
    metrics = rows(d / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1]
    for key in ("reward", "reward/accuracy", "reward/format", "accuracy", "response_length", "truncated_share",
                "reflection_rate", "kl", "clip_low", "clip_high", "entropy", "grad_norm", "tokens_per_s",
                "time/rollout", "time/update"):
        assert key in metrics[0], key
    assert [e["step"] for e in rows(d / "eval.jsonl")] == [0, 2]
    assert json.loads((d / "config.json").read_text())["group_size"] == 4
    assert rows(d / "samples.jsonl")
    model = AutoModelForCausalLM.from_pretrained(d / "final")  # plain transformers, no conversion
    AutoTokenizer.from_pretrained(d / "final")
    assert model.config.model_type == "qwen2"
    assert summary["final_pass@1"] is not None


def test_resume_equals_uninterrupted(tiny_model_dir, tmp_path):
    cfg = dict(steps=3, lr=1e-3, warmup=1)
    run(small(tiny_model_dir, tmp_path / "full", **cfg))
    run(small(tiny_model_dir, tmp_path / "cut", **{**cfg, "steps": 1}))
    with pytest.raises(ConfigError, match="--resume"):
        run(small(tiny_model_dir, tmp_path / "cut", **cfg))
    run(small(tiny_model_dir, tmp_path / "cut", resume=True, **cfg))
    a, b = rows(tmp_path / "full" / "metrics.jsonl"), rows(tmp_path / "cut" / "metrics.jsonl")
    assert [m["step"] for m in b] == [0, 1, 2]
    assert [m["reward"] for m in a] == [m["reward"] for m in b]
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "cut" / "final" / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_kill_9_then_resume(tiny_model_dir, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "r1lab", "zero", "--model", tiny_model_dir, "--output-dir", str(out),
            "--steps", "30", "--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "16",
            "--eval-problems", "2", "--eval-k", "1", "--eval-every", "0", "--report-to", "none"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").is_file():
        time.sleep(0.2)
    while time.time() < deadline and len((out / "metrics.jsonl").read_text().splitlines()) < 3:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(rows(out / "metrics.jsonl"))
    assert 0 < done < 30
    res = subprocess.run(args[:8] + ["--steps", "6"] + args[10:] + ["--resume"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    steps = [m["step"] for m in rows(out / "metrics.jsonl")]
    assert steps == list(range(max(6, done))) or steps[:6] == list(range(6))
    assert (out / "final" / "model.safetensors").is_file()


def test_reward_faults_are_counted_not_fatal(tiny_model_dir, tmp_path):
    run(small(tiny_model_dir, tmp_path / "r", steps=1, reward_fn="tests.reward_fns:sometimes_raises"))
    m = rows(tmp_path / "r" / "metrics.jsonl")[0]
    assert m["reward_errors"] > 0 and m["reward_errors"] < 8


def test_reward_runner_timeout_and_errors():
    task = get_task("countdown")
    ex = {"nums": [3, 5, 7], "target": 22}
    r = RewardRunner(task, "tests.reward_fns:hangs", timeout=0.2)
    t0 = time.time()
    rewards, comps, errs = r([ex, ex], ["a", "b"])
    assert time.time() - t0 < 2.0
    assert rewards == [0.0, 0.0] and errs["reward_timeouts"] == 2
    r = RewardRunner(task, "tests.reward_fns:nan")
    assert r([ex], ["a"])[2]["reward_errors"] == 1
    r = RewardRunner(task)  # the task's own reward
    assert r([ex], ["x</think><answer>(3*5)+7</answer>"])[0] == [1.1]
    with pytest.raises(ValueError, match="module:function"):
        RewardRunner(task, "no_colon")


def test_overlong_penalty_by_hand():
    # max 100, buffer 20: free up to 80, then linear to -1 at 100, -1 beyond
    assert overlong_penalty(80, 100, 20) == 0.0
    assert overlong_penalty(90, 100, 20) == -0.5
    assert overlong_penalty(100, 100, 20) == -1.0
    assert overlong_penalty(130, 100, 20) == -1.0
    assert overlong_penalty(130, 100, 0) == 0.0


def test_nan_loss_skips_then_stops(tiny_model_dir, tmp_path, monkeypatch):
    import r1lab.rl.update as update
    from r1lab.errors import UserError

    real = update.policy_loss

    def nan_loss(*a, **k):
        loss, st = real(*a, **k)
        return loss * float("nan"), st

    monkeypatch.setattr(update, "policy_loss", nan_loss)
    # every row runs (the tiny model's groups may all lack spread, and skipped rows compute no loss)
    with pytest.raises(UserError, match="non-finite.*Last good checkpoint"):
        run(small(tiny_model_dir, tmp_path / "nan", steps=5, max_bad_steps=2, skip_zero_advantage=False))
    m = rows(tmp_path / "nan" / "metrics.jsonl")
    assert m[0]["nonfinite_skips"] == 1 and len(m) == 1  # the second bad step stops the run


def test_grpo_ppo_and_dynamic_sampling_run(tiny_model_dir, tmp_path):
    run(small(tiny_model_dir, tmp_path / "ppo", steps=1, algo="ppo", beta=0.01))
    run(small(tiny_model_dir, tmp_path / "dapo", steps=1, dynamic_sampling=True, overlong_buffer=4,
              mask_truncated=True, norm="constant", level="sequence", mu=2, minibatches=2, recompute_old_logp=True))
    assert (tmp_path / "ppo" / "checkpoint" / "value" / "value_head.safetensors").is_file()


def test_impossible_configs_are_rejected_up_front(tmp_path):
    bad = [
        dict(prompts_per_step=3, group_size=4, minibatches=2),
        dict(group_size=1),
        dict(norm="mean"),
        dict(ref_refresh=10, beta=0.0),
        dict(overlong_buffer=500, max_new_tokens=100),
    ]
    for kw in bad:
        with pytest.raises(ConfigError):
            build_config(Config, None, kw)
    recipe = tmp_path / "r.toml"
    recipe.write_text("group_sise = 4\n")
    with pytest.raises(ConfigError, match="group_sise"):
        build_config(Config, str(recipe), {})
