"""An RL run as a component: the step loop with logging, evaluation, checkpoints and resume, which
``r1lab zero``, on-policy distillation and the R1 pipeline's RL stages all call.

    start = restore(learner, ckpt) if ckpt else 0
    evals = train(learner, engine, prompts, reward, settings, Schedule(steps=150), run_dir, runlog, tok,
                  evaluate=lambda step: held_out_metrics(step), start=start)

Each step: lr from the schedule -> ``rl.step.rl_step`` -> ``metrics.jsonl`` -> the reference is
reset to the policy every ``ref_refresh`` steps (R1: 400) -> sampled completions every
``sample_every`` steps -> ``evaluate(step)`` every ``eval_every`` steps and at the end -> an atomic
checkpoint every ``save_every`` steps and at the end (policy, reference when refreshed, critic,
optimizers, RNG, step, bad-step count). ``NonFiniteError`` becomes a one-line ``UserError`` naming
the last good checkpoint.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from r1lab import distributed
from r1lab.engine.rollout import Engine, HFEngine
from r1lab.errors import UserError
from r1lab.models import load_model, load_tokenizer, pad_id
from r1lab.moe import attach_router_balancer
from r1lab.rl.collect import Prompts, RewardFn
from r1lab.rl.learner import Critic, Learner
from r1lab.rl.settings import RLSettings
from r1lab.rl.step import rl_step
from r1lab.rl.update import NonFiniteError
from r1lab.rl.value import ValueModel
from r1lab.train import checkpoint, lora
from r1lab.train.schedule import lr_at
from r1lab.train.tracking import RunLog

log = logging.getLogger("r1lab.rl")


@dataclass
class Schedule:
    steps: int
    eval_every: int = 0  # 0 = at the start and the end only
    save_every: int = 1
    sample_every: int = 0
    dump_rollouts: bool = False  # every trained completion to rollouts.jsonl


def train(learner: Learner, engine: Engine, prompts: Prompts, reward: RewardFn, s: RLSettings, sched: Schedule,
          run_dir: str | Path, runlog: RunLog, tok, evaluate: Callable[[int], dict] | None = None,
          start: int = 0, desc: str = "rl") -> list[dict]:
    """Run steps ``start .. sched.steps - 1``; returns every evaluation row (earlier ones re-read)."""
    run_dir = Path(run_dir)
    eval_file = run_dir / "eval.jsonl"
    evals = [json.loads(x) for x in eval_file.read_text().splitlines()] if start and eval_file.is_file() else []
    main = distributed.is_main()  # under torchrun every rank trains and evaluates its share; rank 0 writes
    if start == 0 and evaluate is not None:
        evals.append(evaluate(0))
    bar = tqdm(range(start, sched.steps), initial=start, total=sched.steps, desc=desc, unit="step", dynamic_ncols=True,
               disable=not main)
    for step in bar:
        lr = lr_at(step, s.lr, s.warmup, sched.steps, s.schedule)
        try:
            result = rl_step(step, learner, engine, prompts, reward, s, lr)
        except NonFiniteError as exc:
            raise UserError(f"{exc}. Last good checkpoint: {run_dir / 'checkpoint'}") from exc
        if learner.rollout is not None:  # --parallel fsdp: the engine's full copy := the updated shards
            distributed.copy_full(learner.policy, learner.rollout)
        if hasattr(engine, "sync_weights"):  # vLLM: the updated weights, in place, before the next rollout
            engine.sync_weights(lora.plain(learner.policy))
        stats = result.metrics
        runlog.write("metrics.jsonl", {"step": step, **stats, "world_size": distributed.world()}, prefix="train/")
        bar.set_postfix(reward=f"{stats['reward']:.3f}", acc=f"{stats['accuracy']:.3f}", len=f"{stats['response_length']:.0f}")
        if s.ref_refresh and learner.ref is not None and (step + 1) % s.ref_refresh == 0:
            learner.ref.load_state_dict(learner.sampler.state_dict())
        if sched.dump_rollouts:
            for g, group in enumerate(result.groups):
                for j, (x, r) in enumerate(zip(group.samples, group.rewards)):
                    runlog.write("rollouts.jsonl", {"step": step, "group": g, "sample": j, "reward": r,
                                                    "completion_ids": x.completion_ids, "text": x.text}, prefix=None)
        if sched.sample_every and step % sched.sample_every == 0:
            for row in result.shown[:3]:
                runlog.write("samples.jsonl", {"step": step, **row}, prefix=None)
        last = step == sched.steps - 1
        if evaluate is not None and (last or (sched.eval_every and (step + 1) % sched.eval_every == 0)):
            evals.append(evaluate(step + 1))
        if last or (step + 1) % sched.save_every == 0:
            save(run_dir, learner, tok, step + 1, keep_ref=bool(s.ref_refresh))  # rank 0 writes
    bar.close()
    distributed.barrier()
    return evals


def make_engine(policy, tok, s: RLSettings, run_dir: str | Path, max_batch: int = 256) -> Engine:
    """The rollout engine of ``s.engine``: r1lab's ``HFEngine`` on the policy's own weights, or a
    colocated vLLM (``engine/vllm_engine.py``) loaded from a copy written under ``run_dir/vllm``.
    Pass ``learner.sampler``: under ``--parallel fsdp`` that is the full copy, not the shards."""
    if distributed.sharded(policy):
        raise ValueError("make_engine needs full weights: pass learner.sampler, not the sharded policy")
    if s.engine == "vllm":
        if distributed.launched():
            raise UserError("--engine vllm under torchrun is not supported yet (each rank would start its own "
                            "vLLM); run one process, or use --engine hf")
        try:
            from r1lab.engine.vllm_engine import VLLMEngine

            return VLLMEngine(lora.plain(policy), tok, Path(run_dir) / f"vllm-rank{distributed.rank()}")
        except ImportError as exc:
            raise UserError(f"--engine vllm: {exc} (pip install vllm; on a CPU: bash scripts/vllm_env.sh)") from exc
    return HFEngine(policy, tok, max_batch=max_batch)


def load_learner(base: str, ckpt: Path | None, s: RLSettings, device: str) -> tuple[Learner, Any]:
    """(learner, tokenizer): the policy and its AdamW, the frozen reference (β > 0) and the critic
    (PPO), from the checkpoint's copies when resuming, else from ``base``."""
    src = str(ckpt / "policy") if ckpt else base
    tok = load_tokenizer(src)
    if s.lora_rank > 0:  # the base again, its adapters from the checkpoint (policy/ holds them merged)
        policy = lora.apply(load_model(base, device=device), s.lora_rank, s.lora_alpha, s.lora_targets).train()
        if ckpt:
            lora.load_adapter(policy, ckpt / "policy")
    else:
        policy = load_model(src, device=device).train()
    rollout = shard_policy(policy, s)
    ref = None
    if s.beta > 0:
        ref_src = str(ckpt / "ref") if ckpt and (ckpt / "ref").is_dir() else base
        ref = load_model(ref_src, device=device).eval().requires_grad_(False)
    critic = None
    if s.algo == "ppo":
        value_src = str(ckpt / "value") if ckpt and (ckpt / "value").is_dir() else base
        value = ValueModel.from_pretrained(value_src).to(device).train()
        critic = Critic(value, torch.optim.AdamW(value.parameters(), lr=s.value_lr, weight_decay=0.0))
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=s.lr, betas=(0.9, 0.99), weight_decay=s.weight_decay)
    attach_router_balancer(policy, opt, s.router_bias_gamma)  # V3 routers: the bias update transformers lacks
    return Learner(policy, opt, pad_id(tok), ref=ref, critic=critic, rollout=rollout), tok


def shard_policy(policy, s: RLSettings) -> Any:
    """With ``--parallel fsdp`` under torchrun: keep an unsharded, gradient-free copy of ``policy``
    for the rollout engine, then shard ``policy`` in place (before its optimizer is made) and return
    the copy. Otherwise nothing changes and None is returned."""
    if s.parallel != "fsdp" or not distributed.active():
        return None
    rollout = copy.deepcopy(policy).eval().requires_grad_(False)
    distributed.shard(policy)
    return rollout


def restore(learner: Learner, ckpt: Path) -> int:
    """Optimizer states, RNG and the bad-step count from ``ckpt``; returns the step to run next."""
    state = checkpoint.load_state(ckpt)
    if distributed.sharded(learner.policy):
        distributed.load_optimizer(learner.policy, learner.optimizer, state["optimizer"])
    else:
        learner.optimizer.load_state_dict(state["optimizer"])
    if learner.critic is not None and state.get("value_optimizer"):
        learner.critic.optimizer.load_state_dict(state["value_optimizer"])
    checkpoint.set_rng_state(state["rng"])
    learner.bad_steps = state.get("bad_steps", 0)
    log.warning("resumed from %s at step %d", ckpt, state["step"])
    return state["step"]


def save(run_dir: Path, learner: Learner, tok, next_step: int, keep_ref: bool) -> None:
    """An atomic checkpoint of everything a resume needs, written by rank 0. Every rank calls it:
    a sharded optimizer's state is gathered (the weights come from the full copy ``learner.sampler``)."""
    opt_state = distributed.optimizer_state(learner.policy, learner.optimizer)
    if not distributed.is_main():
        return
    models = {"policy": learner.sampler}
    if learner.ref is not None and keep_ref:  # a refreshed reference is no longer the base
        models["ref"] = learner.ref
    if learner.critic is not None:
        models["value"] = learner.critic.model
    state = {
        "step": next_step,
        "optimizer": opt_state,
        "value_optimizer": learner.critic.optimizer.state_dict() if learner.critic else None,
        "bad_steps": learner.bad_steps,
    }
    checkpoint.save(run_dir, models, tok, state)
