"""Distillation: the on-policy advantage by hand, both modes end to end, the tokenizer check."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from r1lab.config import ConfigError
from r1lab.engine.rollout import HFEngine, SamplingParams
from r1lab.models import load_model, load_tokenizer, pad_id
from r1lab.rl.collect import Group
from r1lab.rl.learner import Learner
from r1lab.rl.settings import RLSettings
from r1lab.rl.update import prepare
from r1lab.train.batch import row_logprobs


def _groups(model, tok, n=4):
    out = HFEngine(model, tok).generate(["Use 3 5 7 to make 22.\n<think>"], SamplingParams(12, 1.0, seed=0), n=n)
    return [Group({"id": "a"}, out.samples, [0.0] * n, [{} for _ in range(n)])]


def test_teacher_advantage_is_the_per_token_log_ratio(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    student = load_model(tiny_model_dir)
    opt = torch.optim.SGD(student.parameters(), lr=0.0)
    groups = _groups(student, tok)
    s = RLSettings(algo="distill", group_size=4, prompts_per_step=1, max_new_tokens=12, shared_prompt=False)
    same = prepare(groups, Learner(student, opt, pad_id(tok), teacher=copy.deepcopy(student)), s)
    assert same.adv.dim() == 2 and same.adv.abs().max() < 1e-4  # the teacher is the student: KL = 0
    assert abs(same.stats["reverse_kl"]) < 1e-4
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = prepare(groups, Learner(student, opt, pad_id(tok), teacher=teacher), s)
    with torch.no_grad():
        t_lp, _, t = row_logprobs(teacher, batch.pk, torch.arange(4))
    want = (t_lp - batch.old_logp[:, :t]) * batch.pk.mask[:, :t]
    assert torch.allclose(batch.adv[:, :t], want, atol=1e-5)
    assert (batch.adv * (1 - batch.pk.mask)).abs().max() == 0  # nothing on padding


def test_discount_and_reward_weight_reach_the_advantage(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    student = load_model(tiny_model_dir)
    opt = torch.optim.SGD(student.parameters(), lr=0.0)
    groups = _groups(student, tok)
    groups[0].rewards[:] = [1.0, 0.0, 0.0, 0.0]  # group advantages (r − 0.25) / 0.5 = [1.5, −0.5, −0.5, −0.5]
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    kw = dict(algo="distill", group_size=4, prompts_per_step=1, max_new_tokens=12, shared_prompt=False)
    own = prepare(groups, Learner(student, opt, pad_id(tok), teacher=teacher), RLSettings(**kw)).adv
    s = RLSettings(**kw, distill_discount=1.0, distill_reward=2.0)
    batch = prepare(groups, Learner(student, opt, pad_id(tok), teacher=teacher), s)
    to_go = own.flip(1).cumsum(1).flip(1)  # padding is at the end and 0: the KL still to come
    seq = torch.tensor([1.5, -0.5, -0.5, -0.5])[:, None] * 2.0
    assert torch.allclose(batch.adv, (to_go + seq) * batch.pk.mask, atol=1e-3)


def test_distill_settings_are_checked():
    with pytest.raises(ConfigError, match="distill_discount"):
        RLSettings(algo="distill", distill_discount=1.5).validate()
    with pytest.raises(ConfigError, match="group_size"):
        RLSettings(algo="distill", group_size=1, distill_reward=1.0).validate()


def test_zero_refuses_algo_distill():
    from r1lab.commands.zero import Config

    with pytest.raises(ConfigError, match="distill"):
        Config(algo="distill").validate()


@pytest.mark.parametrize("mode", ["sft", "on-policy"])
def test_distill_runs_end_to_end(mode, tiny_model_dir, tmp_path):
    from r1lab.commands.distill import Config, run

    # SFT needs a teacher that is sometimes right: the shipped base (as teacher and student)
    model = tiny_model_dir if mode == "on-policy" else "default"
    summary = run(Config(teacher=model, student=model, mode=mode, output_dir=str(tmp_path / mode),
                         steps=2, prompts=12, k=4, prompts_per_step=2, group_size=4, max_new_tokens=64, epochs=1,
                         eval_problems=3, eval_k=1, report_to="none", micro_batch=8, eval_every=1))
    assert summary["mode"] == mode and summary["start_pass@1"] is not None
    assert summary["compute"]["teacher_forward_tokens"] > 0 and summary["compute"]["student_train_tokens"] > 0
    assert (tmp_path / mode / "final" / "model.safetensors").is_file()
    if mode == "sft":
        assert summary["teacher_rows"] > 0 and summary["teacher_pass_rate"] > 0
    if mode == "on-policy":
        rows = [json.loads(x) for x in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
        assert all(abs(r["reverse_kl"]) < 1e-3 for r in rows[:1])  # teacher = student at the start
        evals = [json.loads(x) for x in (tmp_path / mode / "eval.jsonl").read_text().splitlines()]
        assert [r["step"] for r in evals] == [1] and "pass@1" in evals[0]  # between start and end only


def test_different_tokenizers_are_refused(tiny_model_dir, tmp_path):
    from r1lab.commands.distill import Config, run

    with pytest.raises(ConfigError, match="different tokenizers"):
        run(Config(teacher=tiny_model_dir, student="", output_dir=str(tmp_path / "x"), report_to="none"))
