"""Pretrain r1lab's embedded default base model on its synthetic corpus.

    r1lab pretrain --output r1lab/assets/base          # the shipped default (~15 min, 2 cores)
    r1lab pretrain --output /tmp/base --steps 50       # a quick smoke build

Steps: generate the corpus (r1lab.tasks.corpus) -> train a byte-level BPE tokenizer on it -> build a
tiny Qwen2 (r1lab.models.tiny_config) -> next-token training on windows of the packed token
stream, each starting at a random document's first token (AdamW, warm-up then cosine decay) ->
``save_pretrained`` model and tokenizer.
Deterministic for a seed on a given machine and thread count. Unlike a real pretraining run,
the corpus is the task's own format: this base plays the role of a base model that has seen
worked solutions of varying quality on the web.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from r1lab import runtime
from r1lab.config import ConfigError, to_dict
from r1lab.models import (
    DEFAULT_MODEL,
    DEFAULT_STUDENT,
    build_tokenizer,
    count_parameters,
    load_tokenizer,
    save_pretrained_atomic,
    tiny_config,
)
from r1lab.tasks import corpus
from r1lab.train.schedule import lr_at

HELP = "build the tiny default base model from r1lab's synthetic corpus"


PRESETS = {
    "base": {},
    # the distillation student: about a quarter of the base's parameters, the base's own tokenizer
    "student": {"output": DEFAULT_STUDENT, "hidden_size": 128, "layers": 2, "intermediate_size": 384,
                "tokenizer": DEFAULT_MODEL},
}


@dataclass
class Config:
    preset: str = field(default="base", metadata={
        "help": "base (the shipped default) | student (a quarter of the parameters, the base's tokenizer); "
                "sets the defaults of output, hidden_size, layers, intermediate_size, tokenizer"})
    output: str = field(default="", metadata={"help": "directory to write the model to ('' = the preset's)"})
    tokenizer: str = field(default="", metadata={
        "help": "reuse this model directory's tokenizer ('' = train one on the corpus; student: the shipped base's)"})
    steps: int = field(default=2000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=16, metadata={"help": "sequences per step"})
    seq_len: int = field(default=256, metadata={"help": "tokens per training sequence"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate"})
    warmup: int = field(default=100, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    documents: int = field(default=200000, metadata={"help": "documents in the corpus"})
    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary size (before the 4 tag tokens)"})
    hidden_size: int = field(default=0, metadata={"help": "model width (0 = the preset's: 192)"})
    layers: int = field(default=0, metadata={"help": "transformer layers (0 = the preset's: 4)"})
    intermediate_size: int = field(default=0, metadata={"help": "MLP width (0 = the preset's: 512)"})
    seed: int = field(default=0, metadata={"help": "seed of corpus, init and batches"})
    threads: int = field(default=0, metadata={"help": "torch threads (0 = all cores)"})
    reuse_memory: bool = field(default=True, metadata={
        "help": "keep freed memory in the process instead of returning it to the OS (glibc mallopt; fewer page faults)"})

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        defaults = {"output": DEFAULT_MODEL, "hidden_size": 192, "layers": 4, "intermediate_size": 512,
                    **PRESETS[self.preset]}
        for key, value in defaults.items():  # the preset fills what was not given
            if not getattr(self, key):
                setattr(self, key, value)
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < 8:
            raise ConfigError("steps, batch_size must be >= 1 and seq_len >= 8")
        if self.hidden_size % 64:
            raise ConfigError("hidden_size must be a multiple of 64 (head size 48 x 4 heads fits 192)")


def window_starts(doc_starts: list[int], total: int, seq_len: int) -> torch.Tensor:
    """The documents' first positions that leave a whole window (``seq_len`` + 1 tokens: inputs
    and the shifted targets) inside a stream of ``total`` tokens."""
    return torch.tensor([s for s in doc_starts if s + seq_len + 1 <= total], dtype=torch.long)


def run(cfg: Config) -> dict:
    cfg.validate()
    from transformers import AutoModelForCausalLM

    runtime.configure(cfg.threads, cfg.reuse_memory)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    docs = corpus.documents(cfg.documents, cfg.seed)
    tok = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else build_tokenizer(docs[:50000], vocab_size=cfg.vocab_size)
    eos = tok.eos_token_id
    ids: list[int] = []
    doc_starts: list[int] = []
    for chunk in range(0, len(docs), 10000):
        for row in tok(docs[chunk : chunk + 10000], add_special_tokens=False)["input_ids"]:
            doc_starts.append(len(ids))
            ids.extend(row)
            ids.append(eos)
    stream = torch.tensor(ids, dtype=torch.long)
    # every window starts at a document's first token, so each solution is trained with its
    # question in context (a window starting mid-document trains a continuation whose question
    # was cut off); later documents in the window may still be cut at its end
    starts_pool = window_starts(doc_starts, len(stream), cfg.seq_len)
    vocab = len(tok)
    model_cfg = tiny_config(
        vocab_size=(vocab + 63) // 64 * 64,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.layers,
        intermediate_size=cfg.intermediate_size,
        eos_token_id=eos,
        pad_token_id=tok.pad_token_id,
        bos_token_id=eos,
    )
    model = AutoModelForCausalLM.from_config(model_cfg, attn_implementation="sdpa")
    n_params = count_parameters(model)
    print(f"corpus: {len(docs)} documents, {len(stream)} tokens; vocab {vocab}; model {n_params / 1e6:.2f}M params")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    bar = tqdm(range(cfg.steps), desc="pretrain", unit="step", dynamic_ncols=True)
    t_train = time.time()
    loss_ema = None
    for step in bar:
        starts = starts_pool[torch.randint(0, len(starts_pool), (cfg.batch_size,), generator=gen)]
        batch = torch.stack([stream[s : s + cfg.seq_len + 1] for s in starts.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, cfg.warmup, cfg.steps, "cosine")
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        tok_s = (step + 1) * cfg.batch_size * cfg.seq_len / (time.time() - t_train)
        bar.set_postfix(loss=f"{loss_ema:.3f}", tok_s=f"{tok_s:,.0f}")
    model.eval()
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tok.pad_token_id
    Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    save_pretrained_atomic(model, tok, cfg.output)
    summary = {
        "params": n_params,
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len,
        "corpus_tokens": len(stream),
        "final_loss_ema": loss_ema,
        "minutes": (time.time() - t0) / 60,
        "config": to_dict(cfg),
    }
    (Path(cfg.output) / "pretrain_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return summary
