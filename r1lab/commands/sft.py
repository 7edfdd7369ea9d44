"""Supervised fine-tuning of any causal LM on prompt/response or chat rows (R1's cold start and its
SFT on rejection-sampled data, and SFT distillation).

    r1lab sft --data traces.jsonl --output-dir runs/sft                      # the shipped base
    r1lab sft --model Qwen/Qwen2.5-0.5B --data org/dataset --template chat --epochs 2
    r1lab sft --data traces.jsonl --output-dir runs/sft --resume             # after kill -9

The flow of ``run``: open the run directory (refuse to overwrite a checkpoint unless
``--resume``) -> read and check the rows (file, line and field named on a bad one) -> hold out
``eval_share`` of them (or read ``--eval-data``) -> tokenize (loss on response tokens only) ->
plan every epoch's steps (seeded shuffle, length bucketing) -> for each step: linear warm-up then
cosine decay to 1/10 of the peak (R1's distillation schedule) -> ``train.sft.sft_step`` -> log ->
held-out loss every ``eval_every`` steps -> atomic checkpoint every ``save_every`` steps -> the
final model in plain ``save_pretrained`` format.

Rows: ``{"prompt": ..., "response": ...}`` (the prompt as written with ``--template raw``, or
rendered as a task question with r1 / short / chat / plain), or ``{"messages": [...]}`` whose last
message is the assistant's (rendered with the tokenizer's chat template).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from r1lab import runtime
from r1lab.config import ConfigError, to_dict
from r1lab.errors import UserError
from r1lab.models import (
    load_model,
    load_tokenizer,
    pad_id,
    pick_device,
    resolve_model,
    save_pretrained_atomic,
)
from r1lab.train import checkpoint
from r1lab.train.schedule import lr_at
from r1lab.train.sft import batches, evaluate_nll, read_sft_rows, sft_step, tokenize
from r1lab.train.tracking import RunLog, parse_report_to

HELP = "supervised fine-tuning on prompt/response or chat rows (loss on the response only)"
log = logging.getLogger("r1lab.sft")


@dataclass
class Config:
    model: str = field(default="", metadata={"help": "model: directory or hub id ('' = shipped base)"})
    data: str = field(default="", metadata={"help": "training rows: JSONL/JSON/parquet file or hub id"})
    split: str = field(default="train", metadata={"help": "split of a hub dataset or data folder"})
    eval_data: str = field(default="", metadata={"help": "held-out rows ('' = hold out eval_share of data)"})
    eval_share: float = field(default=0.05, metadata={"help": "share of data held out when no eval_data"})
    template: str = field(default="raw", metadata={"help": "prompt rendering: raw | r1 | short | chat | plain"})
    skip_bad: bool = field(default=False, metadata={"help": "skip (and count) bad rows instead of stopping"})
    max_len: int = field(default=1024, metadata={"help": "longest prompt + response in tokens (longer rows dropped)"})
    output_dir: str = field(default="runs/sft", metadata={"help": "run directory"})
    epochs: int = field(default=2, metadata={"help": "passes over the data (R1: 2)"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    warmup: int = field(default=10, metadata={"help": "linear warm-up steps"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "cosine decay to this share of the peak"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm"})
    tokens_per_step: int = field(default=8192, metadata={"help": "tokens (prompt + response) per optimizer step"})
    micro_batch_tokens: int = field(default=4096, metadata={"help": "padded tokens per forward/backward"})
    eval_every: int = field(default=50, metadata={"help": "held-out loss every N steps (0 = start and end)"})
    save_every: int = field(default=50, metadata={"help": "checkpoint every N steps"})
    max_bad_steps: int = field(default=5, metadata={"help": "stop after this many non-finite steps in a row"})
    resume: bool = field(default=False, metadata={"help": "continue from RUN_DIR/checkpoint"})
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard | wandb | trackio | none"})
    seed: int = field(default=0, metadata={"help": "seed of the data order and init"})
    device: str = field(default="auto", metadata={"help": "cpu | cuda | auto"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = default)"})

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("give the training rows: --data FILE or hub id")
        if self.template not in ("raw", "r1", "short", "chat", "plain"):
            raise ConfigError(f"template must be raw | r1 | short | chat | plain, not {self.template!r}")
        if self.epochs < 1 or self.tokens_per_step < 1 or self.micro_batch_tokens < 1 or self.save_every < 1:
            raise ConfigError("epochs, tokens_per_step, micro_batch_tokens and save_every must be >= 1")
        if not 0 <= self.eval_share < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("eval_share must be in [0, 1) and min_lr_ratio in [0, 1]")
        if self.lr <= 0 or self.warmup < 0 or self.max_len < 2:
            raise ConfigError("lr must be > 0, warmup >= 0, max_len >= 2")
        parse_report_to(self.report_to)


def run(cfg: Config) -> dict:
    cfg.validate()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_dir = Path(cfg.output_dir)
    ckpt = checkpoint.latest(run_dir)
    if ckpt is not None and not cfg.resume:
        raise ConfigError(f"{run_dir} already holds a checkpoint: pass --resume to continue it, or pick another --output-dir")
    runtime.configure(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    src = str(ckpt / "policy") if ckpt else resolve_model(cfg.model)
    tok = load_tokenizer(src)
    model = load_model(src, device=device).train()
    train_ex, eval_ex, dropped = load_examples(cfg, tok)
    plan = [(epoch, rows) for epoch in range(cfg.epochs) for rows in batches(train_ex, cfg.tokens_per_step, cfg.seed, epoch)]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    start, bad = 0, 0
    if ckpt is not None:
        state = checkpoint.load_state(ckpt)
        opt.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"])
        start, bad = state["step"], state.get("bad_steps", 0)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({**to_dict(cfg), "dropped_rows": dropped}, indent=2))
    runlog = RunLog(run_dir, cfg.report_to, start, config=to_dict(cfg))
    if start == 0:
        held_out(model, eval_ex, tok, 0, cfg, runlog)
    bar = tqdm(range(start, len(plan)), initial=start, total=len(plan), desc="sft", unit="step", dynamic_ncols=True)
    t0, tokens = time.time(), 0.0
    for step in bar:
        lr = lr_at(step, cfg.lr, cfg.warmup, len(plan), "cosine", floor=cfg.min_lr_ratio)
        epoch, rows = plan[step]
        st = sft_step(model, opt, [train_ex[i] for i in rows], pad_id(tok), lr, cfg.micro_batch_tokens, cfg.grad_clip)
        bad = bad + 1 if st["skipped"] else 0
        if bad >= cfg.max_bad_steps:
            raise UserError(f"{bad} non-finite steps in a row at step {step}; stopping (lower --lr). "
                            f"Last good checkpoint: {run_dir / 'checkpoint'}")
        tokens += st["tokens"]
        row = {"step": step, "epoch": epoch, "lr": lr, **st,
               "tokens_per_s": tokens / max(time.time() - t0, 1e-9)}
        runlog.write("metrics.jsonl", row, prefix="train/")
        bar.set_postfix(loss=f"{st['loss']:.3f}")
        last = step == len(plan) - 1
        if last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0):
            held_out(model, eval_ex, tok, step + 1, cfg, runlog)
        if last or (step + 1) % cfg.save_every == 0:
            checkpoint.save(run_dir, {"policy": model}, tok, {"step": step + 1, "optimizer": opt.state_dict(),
                                                              "bad_steps": bad})
    bar.close()
    runlog.close()
    save_pretrained_atomic(model, tok, run_dir / "final")
    eval_file = run_dir / "eval.jsonl"
    evals = [json.loads(x) for x in eval_file.read_text().splitlines()] if eval_file.is_file() else []
    summary = {"run_dir": str(run_dir), "final_model": str(run_dir / "final"), "steps": len(plan),
               "train_rows": len(train_ex), "eval_rows": len(eval_ex), "dropped_rows": dropped,
               "start_eval_loss": evals[0].get("loss") if evals else None,
               "final_eval_loss": evals[-1].get("loss") if evals else None}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


def load_examples(cfg: Config, tok) -> tuple[list, list, int]:
    """Training and held-out examples (token ids) and how many rows were too long."""
    rows, _ = read_sft_rows(cfg.data, cfg.split, cfg.skip_bad)
    if cfg.eval_data:
        held, _ = read_sft_rows(cfg.eval_data, "test", cfg.skip_bad)
    else:
        order = list(range(len(rows)))
        random.Random(f"sft-holdout-{cfg.seed}").shuffle(order)
        n_eval = int(len(rows) * cfg.eval_share)
        held = [rows[i] for i in order[:n_eval]]
        rows = [rows[i] for i in sorted(order[n_eval:])]
    train_ex, d1 = tokenize(rows, tok, cfg.template, cfg.max_len)
    eval_ex, d2 = tokenize(held, tok, cfg.template, cfg.max_len)
    if not train_ex:
        raise ConfigError(f"{cfg.data}: no training rows left (of {len(rows)}; {d1} longer than max_len {cfg.max_len})")
    if d1 + d2:
        log.warning("%d rows longer than max_len=%d were dropped", d1 + d2, cfg.max_len)
    return train_ex, eval_ex, d1 + d2


def held_out(model, eval_ex: list, tok, step: int, cfg: Config, runlog: RunLog) -> None:
    if not eval_ex:
        return
    st = evaluate_nll(model, eval_ex, pad_id(tok), cfg.micro_batch_tokens)
    runlog.write("eval.jsonl", {"step": step, **st}, prefix="eval/")
    tqdm.write(f"[eval step {step}] held-out loss {st['loss']:.4f}  perplexity {st['perplexity']:.3f}")
