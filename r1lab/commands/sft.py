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
from dataclasses import dataclass, field
from pathlib import Path

import torch

from r1lab import distributed, runtime
from r1lab.config import ConfigError, to_dict
from r1lab.models import load_model, load_tokenizer, resolve_model
from r1lab.train import lora
from r1lab.train.sft import read_sft_rows, tokenize
from r1lab.train.sft_loop import SFTSettings, fit, open_run

HELP = "supervised fine-tuning on prompt/response or chat rows (loss on the response only)"
log = logging.getLogger("r1lab.sft")


@dataclass
class Config(SFTSettings):
    """``r1lab sft``: the SFT run's settings (``SFTSettings``) plus what to train on and where."""

    model: str = field(default="", metadata={"help": "model: directory or hub id ('' = shipped base)"})
    data: str = field(default="", metadata={"help": "training rows: JSONL/JSON/parquet file or hub id"})
    split: str = field(default="train", metadata={"help": "split of a hub dataset or data folder"})
    eval_data: str = field(default="", metadata={"help": "held-out rows ('' = hold out eval_share of data)"})
    eval_share: float = field(default=0.05, metadata={"help": "share of data held out when no eval_data"})
    template: str = field(default="raw", metadata={"help": "prompt rendering: raw | r1 | short | chat | plain"})
    skip_bad: bool = field(default=False, metadata={"help": "skip (and count) bad rows instead of stopping"})
    max_len: int = field(default=1024, metadata={"help": "longest prompt + response in tokens (longer rows dropped)"})
    output_dir: str = field(default="runs/sft", metadata={"help": "run directory"})
    device: str = field(default="auto", metadata={"help": "cpu | cuda | auto"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = default)"})

    def validate(self) -> None:
        super().validate()
        if not self.data:
            raise ConfigError("give the training rows: --data FILE or hub id")
        if self.template not in ("raw", "r1", "short", "chat", "plain"):
            raise ConfigError(f"template must be raw | r1 | short | chat | plain, not {self.template!r}")
        if not 0 <= self.eval_share < 1 or self.max_len < 2:
            raise ConfigError("eval_share must be in [0, 1), max_len >= 2")


def run(cfg: Config) -> dict:
    cfg.validate()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ckpt = open_run(cfg.output_dir, cfg.resume)
    runtime.configure(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = distributed.init(cfg.device)  # under torchrun: join the group; rank 0 writes
    src = str(ckpt / "policy") if ckpt else resolve_model(cfg.model)
    tok = load_tokenizer(src)
    if cfg.lora_rank > 0:  # the base again, its adapters from the checkpoint (policy/ holds them merged)
        model = lora.apply(load_model(resolve_model(cfg.model), device=device),
                           cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets).train()
        if ckpt:
            lora.load_adapter(model, ckpt / "policy")
    else:
        model = load_model(src, device=device).train()
    train_ex, eval_ex, dropped = load_examples(cfg, tok)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    meta = {"dropped_rows": dropped, "world_size": distributed.world()}
    if distributed.is_main():
        (Path(cfg.output_dir) / "config.json").write_text(json.dumps({**to_dict(cfg), **meta}, indent=2))
    summary = {**fit(model, tok, train_ex, eval_ex, cfg, cfg.output_dir, ckpt, to_dict(cfg)), **meta}
    if distributed.is_main():
        (Path(cfg.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary))
    distributed.close()
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
