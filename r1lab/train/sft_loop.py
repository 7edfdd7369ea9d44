"""An SFT run as a component: settings, and ``fit`` — the epoch loop with evaluation, checkpoints
and resume — which ``r1lab sft``, SFT distillation and the R1 pipeline's SFT stages all call.

    settings = SFTSettings(epochs=2, lr=1e-4)
    summary = fit(model, tok, train_ex, eval_ex, settings, run_dir="runs/sft")   # resumes if it can

The loop: plan every epoch's steps (``sft.batches``: seeded shuffle, length bucketing) -> for each
step: lr = linear warm-up then cosine decay to ``min_lr_ratio`` of the peak (R1's distillation
schedule) -> ``sft.sft_step`` -> ``metrics.jsonl`` -> held-out loss every ``eval_every`` steps ->
an atomic checkpoint every ``save_every`` steps (weights + optimizer + RNG + step). A run directory
holding a checkpoint is resumed only when ``resume`` is set (else ``ConfigError``), and it redoes
nothing: the plan is a function of the seed, so step s after a resume is step s of the plan.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from r1lab import distributed
from r1lab.config import ConfigError
from r1lab.errors import UserError
from r1lab.models import pad_id, save_pretrained_atomic
from r1lab.moe import attach_router_balancer
from r1lab.train import checkpoint, lora
from r1lab.train.schedule import lr_at
from r1lab.train.sft import SFTExample, batches, evaluate_nll, sft_step
from r1lab.train.tracking import RunLog, parse_report_to


@dataclass
class SFTSettings(lora.LoraFields):
    epochs: int = field(default=2, metadata={"help": "passes over the data (R1: 2)"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    warmup: int = field(default=10, metadata={"help": "linear warm-up steps"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "cosine decay to this share of the peak"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm"})
    tokens_per_step: int = field(default=8192, metadata={"help": "tokens (prompt + response) per optimizer step"})
    micro_batch_tokens: int = field(default=2048, metadata={"help": "padded tokens per forward/backward"})
    precision: str = field(default="fp32", metadata={
        "help": "fp32 | bf16: the training forward/backward's matmuls in bf16 (autocast); weights, optimizer, "
                "attention, norms and the loss stay fp32 (~1.5x faster per step on a CPU with AMX; docs/performance.md)"})
    eval_every: int = field(default=50, metadata={"help": "held-out loss every N steps (0 = start and end)"})
    save_every: int = field(default=50, metadata={"help": "checkpoint every N steps"})
    max_bad_steps: int = field(default=5, metadata={"help": "stop after this many non-finite steps in a row"})
    resume: bool = field(default=False, metadata={"help": "continue from RUN_DIR/checkpoint"})
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard | wandb | trackio | none"})
    seed: int = field(default=0, metadata={"help": "seed of the data order and init"})
    router_bias_gamma: float = field(default=1e-3, metadata={
        "help": "DeepSeek-V3 models: routing-bias update speed γ after each step (0 = off)"})
    parallel: str = field(default="dp", metadata={
        "help": "under torchrun: dp (every rank holds the model, gradients summed: DDP's semantics) | "
                "fsdp (FSDP2 fully_shard: weights, gradients and optimizer state sharded over ranks)"})

    def validate(self) -> None:
        if self.epochs < 1 or self.tokens_per_step < 1 or self.micro_batch_tokens < 1 or self.save_every < 1:
            raise ConfigError("epochs, tokens_per_step, micro_batch_tokens and save_every must be >= 1")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be fp32 or bf16, not {self.precision!r}")
        if not 0 <= self.min_lr_ratio <= 1 or self.lr <= 0 or self.warmup < 0 or self.max_bad_steps < 1:
            raise ConfigError("min_lr_ratio must be in [0, 1], lr > 0, warmup >= 0, max_bad_steps >= 1")
        parse_report_to(self.report_to)
        self.validate_lora()
        if self.parallel not in ("dp", "fsdp"):
            raise ConfigError(f"parallel must be dp | fsdp, not {self.parallel!r}")
        if self.parallel == "fsdp" and self.lora_rank > 0:
            raise ConfigError("parallel fsdp with LoRA is not supported: use --parallel dp (adapters are small)")


def open_run(run_dir: str | Path, resume: bool) -> Path | None:
    """The run's checkpoint to resume from (None = start fresh); refuses to overwrite one."""
    ckpt = checkpoint.latest(run_dir)
    if ckpt is not None and not resume:
        raise ConfigError(f"{run_dir} already holds a checkpoint: pass --resume to continue it, or pick another output dir")
    return ckpt


def fit(model, tok, train_ex: list[SFTExample], eval_ex: list[SFTExample], s: SFTSettings, run_dir: str | Path,
        ckpt: Path | None = None, config: dict[str, Any] | None = None, desc: str = "sft") -> dict[str, Any]:
    """Train ``model`` (already loaded from ``ckpt`` when resuming) and return the run's summary."""
    run_dir = Path(run_dir)
    plan = [(epoch, rows) for epoch in range(s.epochs) for rows in batches(train_ex, s.tokens_per_step, s.seed, epoch)]
    if s.parallel == "fsdp" and distributed.active():
        distributed.shard(model)  # before the optimizer: it holds the shards
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.lr, betas=(0.9, 0.95), weight_decay=s.weight_decay)
    attach_router_balancer(model, opt, s.router_bias_gamma)  # V3 routers: the bias update transformers lacks
    start, bad = 0, 0
    if ckpt is not None:
        state = checkpoint.load_state(ckpt)
        if distributed.sharded(model):
            distributed.load_optimizer(model, opt, state["optimizer"])
        else:
            opt.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"])
        start, bad = state["step"], state.get("bad_steps", 0)
    run_dir.mkdir(parents=True, exist_ok=True)
    runlog = RunLog(run_dir, s.report_to, start, config=config)
    pid = pad_id(tok)
    if start == 0:
        held_out(model, eval_ex, pid, 0, s, runlog)
    main = distributed.is_main()  # under torchrun: every rank trains and evaluates its share, rank 0 writes
    bar = tqdm(range(start, len(plan)), initial=start, total=len(plan), desc=desc, unit="step", dynamic_ncols=True,
               disable=not main)
    t0, tokens = time.time(), 0.0
    for step in bar:
        lr = lr_at(step, s.lr, s.warmup, len(plan), "cosine", floor=s.min_lr_ratio)
        epoch, rows = plan[step]
        st = sft_step(model, opt, [train_ex[i] for i in rows], pid, lr, s.micro_batch_tokens, s.grad_clip,
                      bf16=s.precision == "bf16")
        bad = bad + 1 if st["skipped"] else 0
        if bad >= s.max_bad_steps:
            raise UserError(f"{bad} non-finite steps in a row at step {step}; stopping (lower --lr). "
                            f"Last good checkpoint: {run_dir / 'checkpoint'}")
        tokens += st["tokens"]
        runlog.write("metrics.jsonl", {"step": step, "epoch": epoch, "lr": lr, **st, "world_size": distributed.world(),
                                       "tokens_per_s": tokens / max(time.time() - t0, 1e-9)}, prefix="train/")
        bar.set_postfix(loss=f"{st['loss']:.3f}")
        last = step == len(plan) - 1
        if last or (s.eval_every and (step + 1) % s.eval_every == 0):
            held_out(model, eval_ex, pid, step + 1, s, runlog)
        if last or (step + 1) % s.save_every == 0:
            plain, opt_state = savable(model, opt)  # a collective under FSDP
            if main:
                checkpoint.save(run_dir, {"policy": plain}, tok, {"step": step + 1, "optimizer": opt_state, "bad_steps": bad})
    bar.close()
    runlog.close()
    plain, _ = savable(model, None)
    if main:
        save_pretrained_atomic(lora.plain(plain), tok, run_dir / "final")
    distributed.barrier()  # the final model is on disk before any rank moves on
    eval_file = run_dir / "eval.jsonl"
    evals = [json.loads(x) for x in eval_file.read_text().splitlines()] if eval_file.is_file() else []
    return {"run_dir": str(run_dir), "final_model": str(run_dir / "final"), "steps": len(plan),
            "train_rows": len(train_ex), "eval_rows": len(eval_ex),
            "start_eval_loss": evals[0].get("loss") if evals else None,
            "final_eval_loss": evals[-1].get("loss") if evals else None}


def savable(model, opt) -> tuple[Any, dict | None]:
    """(a model ``save_pretrained`` can write, the optimizer's state dict). A sharded model's full
    weights are gathered into a plain copy on rank 0 (None elsewhere): every rank must call this."""
    if not distributed.sharded(model):
        return model, None if opt is None else opt.state_dict()
    from transformers import AutoModelForCausalLM

    sd, osd = distributed.full_state(model, opt)
    if not distributed.is_main():
        return None, None
    plain = AutoModelForCausalLM.from_config(model.config, torch_dtype=next(iter(sd.values())).dtype)
    plain.load_state_dict(sd, strict=False)  # tied weights appear once
    plain.tie_weights()
    return plain, osd


def held_out(model, eval_ex: list[SFTExample], pid: int, step: int, s: SFTSettings, runlog: RunLog) -> None:
    if not eval_ex:
        return
    st = evaluate_nll(model, eval_ex, pid, s.micro_batch_tokens)  # every rank scores its share
    runlog.write("eval.jsonl", {"step": step, **st}, prefix="eval/")
    if distributed.is_main():
        tqdm.write(f"[eval step {step}] held-out loss {st['loss']:.4f}  perplexity {st['perplexity']:.3f}")
