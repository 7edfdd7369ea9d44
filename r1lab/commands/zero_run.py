"""The outer loop of `r1lab zero`: setup, resume, the step loop, evaluation, checkpoints.

The step itself (rollout -> reward -> advantage -> loss -> step) is ``zero.train_step``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from r1lab import checkpoint, runtime
from r1lab.commands.eval import evaluate, task_kwargs
from r1lab.commands.zero_config import Config
from r1lab.config import ConfigError, to_dict
from r1lab.models import (
    load_model,
    load_tokenizer,
    pad_id,
    pick_device,
    resolve_model,
    save_pretrained_atomic,
)
from r1lab.rewards.safe import RewardRunner
from r1lab.rollout import HFEngine, SamplingParams
from r1lab.tasks import get_task

log = logging.getLogger("r1lab.zero")


@dataclass
class Context:
    cfg: Config
    run_dir: Path
    device: str
    tok: Any
    policy: Any
    ref: Any
    value: Any
    opt: Any
    value_opt: Any
    engine: HFEngine
    task: Any
    train: list
    test: list
    rewards: RewardRunner
    pad_id: int
    stop: tuple
    step: int = 0
    bad_steps: int = 0
    last_samples: list | None = None


def setup(cfg: Config) -> tuple[Context, int]:
    """Build everything a run needs; returns (context, first step to run)."""
    from r1lab.value import ValueModel

    run_dir = Path(cfg.output_dir)
    ckpt = checkpoint.latest(run_dir)
    if ckpt is not None and not cfg.resume:
        raise ConfigError(f"{run_dir} already holds a checkpoint: pass --resume to continue it, or pick another --output-dir")
    if cfg.resume and ckpt is None:
        log.warning("--resume: no checkpoint in %s, starting from step 0", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    runtime.configure(cfg.threads, cfg.reuse_memory)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    base = resolve_model(cfg.model)
    src = str(ckpt / "policy") if ckpt else base
    tok = load_tokenizer(src)
    policy = load_model(src, device=device).train()
    ref = None
    if cfg.beta > 0:
        ref_src = str(ckpt / "ref") if ckpt and (ckpt / "ref").is_dir() else base
        ref = load_model(ref_src, device=device).eval().requires_grad_(False)
    value = value_opt = None
    if cfg.algo == "ppo":
        value_src = str(ckpt / "value") if ckpt and (ckpt / "value").is_dir() else base
        value = ValueModel.from_pretrained(value_src).to(device).train()
        value_opt = torch.optim.AdamW(value.parameters(), lr=cfg.value_lr, weight_decay=0.0)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    task = get_task(cfg.task, **task_kwargs(cfg), format_weight=cfg.format_weight, language_weight=cfg.language_weight)
    train, test = task.examples("train"), task.examples("test")[: cfg.eval_problems]
    if not train:
        raise ConfigError(f"task {cfg.task!r} has no training examples")
    ctx = Context(
        cfg=cfg, run_dir=run_dir, device=device, tok=tok, policy=policy, ref=ref, value=value, opt=opt,
        value_opt=value_opt, engine=HFEngine(policy, tok, max_batch=max(256, cfg.prompts_per_step * cfg.group_size)),
        task=task, train=train, test=test, rewards=RewardRunner(task, cfg.reward_fn or None, cfg.reward_timeout),
        pad_id=pad_id(tok), stop=("</answer>",),
    )
    start = 0
    if ckpt is not None:
        state = checkpoint.load_state(ckpt)
        opt.load_state_dict(state["optimizer"])
        if value_opt is not None and state.get("value_optimizer"):
            value_opt.load_state_dict(state["value_optimizer"])
        checkpoint.set_rng_state(state["rng"])
        start, ctx.bad_steps = state["step"], state.get("bad_steps", 0)
        log.warning("resumed from %s at step %d", ckpt, start)
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    return ctx, start


def held_out(ctx: Context, step: int, runlog) -> dict:
    cfg = ctx.cfg
    params = SamplingParams(cfg.max_new_tokens, cfg.eval_temperature, cfg.eval_top_p, 0, ctx.stop, seed=cfg.seed)
    metrics, records = evaluate(ctx.policy, ctx.tok, ctx.task, ctx.test, cfg.eval_k, params, progress=False)
    ctx.policy.train()
    row = {"step": step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    runlog.write("eval.jsonl", row, prefix="eval/")
    tqdm.write(f"[eval step {step}] pass@1 {metrics['pass@1']:.3f}  mean length {metrics.get('mean_length', 0):.1f}")
    return row


def save(ctx: Context, next_step: int) -> None:
    cfg = ctx.cfg
    models = {"policy": ctx.policy}
    if ctx.ref is not None and cfg.ref_refresh:
        models["ref"] = ctx.ref
    if ctx.value is not None:
        models["value"] = ctx.value
    state = {
        "step": next_step,
        "optimizer": ctx.opt.state_dict(),
        "value_optimizer": ctx.value_opt.state_dict() if ctx.value_opt else None,
        "bad_steps": ctx.bad_steps,
    }
    checkpoint.save(ctx.run_dir, models, ctx.tok, state)


def run(cfg: Config) -> dict:
    from r1lab.commands.zero import RunLog, train_step

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx, start = setup(cfg)
    runlog = RunLog(ctx.run_dir, cfg.tensorboard, start)
    t_start = time.time()
    eval_file = ctx.run_dir / "eval.jsonl"
    evals = [json.loads(x) for x in eval_file.read_text().splitlines()] if start and eval_file.is_file() else []
    if start == 0:
        evals.append(held_out(ctx, 0, runlog))
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="zero", unit="step", dynamic_ncols=True)
    for step in bar:
        ctx.step = step
        stats = train_step(ctx, step)
        runlog.write("metrics.jsonl", {"step": step, **stats}, prefix="train/")
        bar.set_postfix(reward=f"{stats['reward']:.3f}", acc=f"{stats['accuracy']:.3f}", len=f"{stats['response_length']:.0f}")
        if cfg.ref_refresh and ctx.ref is not None and (step + 1) % cfg.ref_refresh == 0:
            ctx.ref.load_state_dict(ctx.policy.state_dict())
        if cfg.sample_every and step % cfg.sample_every == 0:
            _log_samples(ctx, step, runlog)
        last = step == cfg.steps - 1
        if last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0):
            evals.append(held_out(ctx, step + 1, runlog))
        if last or (step + 1) % cfg.save_every == 0:
            save(ctx, step + 1)
    bar.close()
    runlog.close()
    final_dir = ctx.run_dir / "final"
    save_pretrained_atomic(ctx.policy, ctx.tok, final_dir)
    summary = {
        "run_dir": str(ctx.run_dir),
        "final_model": str(final_dir),
        "steps": cfg.steps,
        "minutes_this_session": (time.time() - t_start) / 60,
        "start_pass@1": evals[0]["pass@1"] if evals else None,
        "final_pass@1": evals[-1]["pass@1"] if evals else None,
        "reward_errors": ctx.rewards.total_errors,
        "reward_timeouts": ctx.rewards.total_timeouts,
    }
    (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


def _log_samples(ctx: Context, step: int, runlog) -> None:
    """The first completion of the step's first three groups, as sampled for training."""
    for row in getattr(ctx, "last_samples", [])[:3]:
        runlog.write("samples.jsonl", {"step": step, **row}, prefix=None)
