"""Supervised fine-tuning as components: rows -> token ids -> length-bucketed batches -> one step.

    rows = read_sft_rows("traces.jsonl")                  # prompt/response or chat messages
    examples = tokenize(rows, tokenizer, template="short", max_len=512)
    for batch in batches(examples, tokens_per_step=8192, seed=0, epoch=0):
        stats = sft_step(model, optimizer, batch, pad_id, lr=1e-4)   # one optimizer step

The loss is the mean negative log-likelihood of the *response* tokens only (prompt tokens are
context, never targets): with N rows and response masks m_{i,t},

    L = − Σ_i Σ_t m_{i,t} · log π(y_{i,t} | y_{i,<t}) / Σ_i Σ_t m_{i,t}

(the token mean over the whole optimizer step, the same normalisation as TRL's SFTTrainer with
``completion_only_loss``). A step is a list of micro-batches; each micro-batch's loss is scaled
by its share of the step's response tokens, so micro-batching does not change the gradient.

Batching: rows are shuffled per epoch (seeded), then cut into chunks and sorted by length inside
each chunk (length bucketing), so each micro-batch pads little; rows are right-padded and never
attend to each other (no packing, so no cross-row attention by construction). A step holds up
to ``tokens_per_step`` real tokens (at least one row); micro-batches hold up to
``micro_batch_tokens`` padded tokens.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import torch

from r1lab import distributed
from r1lab.data import DataError, read_rows
from r1lab.tasks.base import render_prompt
from r1lab.train import fasttrain


@dataclass
class SFTExample:
    prompt_ids: list[int]
    response_ids: list[int]  # ends with EOS

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def _check(row: dict) -> str | None:
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
            return "field 'messages': expected a non-empty list of {role, content} objects"
        for j, m in enumerate(msgs):
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                return f"field 'messages'[{j}]: expected string 'role' and 'content'"
        if msgs[-1]["role"] != "assistant":
            return "field 'messages': the last message must be the assistant's (the response to learn)"
        return None
    for name in ("prompt", "response"):
        if not isinstance(row.get(name), str):
            return f"field {name!r}: expected a string (rows need prompt + response, or messages)"
    if not row["response"].strip():
        return "field 'response': empty"
    return None


def read_sft_rows(source: str, split: str = "train", skip_bad: bool = False) -> tuple[list[dict], int]:
    """Rows with ``prompt``/``response`` strings or chat ``messages``; errors name file, line, field."""
    return read_rows(source, split, skip_bad=skip_bad, validate=_check)


def render(row: dict, tokenizer: Any, template: str) -> tuple[str, str]:
    """(prompt text, response text) of a row under ``template``.

    ``messages`` rows use the tokenizer's chat template for everything before the last
    (assistant) message; ``prompt``/``response`` rows: ``template`` 'raw' (default) keeps the
    prompt as written, 'r1'/'short'/'chat'/'plain' render it as a task question would be."""
    if "messages" in row:
        msgs = row["messages"]
        if not getattr(tokenizer, "chat_template", None):
            raise DataError("rows with 'messages' need a tokenizer with a chat_template (or use prompt/response rows)")
        prompt = tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        return prompt, msgs[-1]["content"]
    prompt = row["prompt"] if template == "raw" else render_prompt(row["prompt"], template, tokenizer)
    return prompt, row["response"]


def tokenize(rows: list[dict], tokenizer: Any, template: str = "raw", max_len: int = 1024) -> tuple[list[SFTExample], int]:
    """Token ids of each row (response + EOS); rows longer than ``max_len`` are dropped and counted."""
    eos = tokenizer.eos_token_id
    out, dropped = [], 0
    for row in rows:
        prompt, response = render(row, tokenizer, template)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [eos]
        if len(p) + len(r) > max_len:
            dropped += 1
            continue
        out.append(SFTExample(p, r))
    return out, dropped


def batches(examples: list[SFTExample], tokens_per_step: int, seed: int, epoch: int,
            bucket: int = 64) -> list[list[int]]:
    """One epoch as optimizer steps (lists of example indices): a seeded shuffle, length-sorted
    chunks of ``bucket`` steps' worth of rows, each step holding up to ``tokens_per_step`` tokens."""
    order = list(range(len(examples)))
    random.Random(f"sft-{seed}-{epoch}").shuffle(order)
    mean = max(1, sum(e.length for e in examples) // max(1, len(examples)))
    per_chunk = max(1, bucket * tokens_per_step // mean)
    steps: list[list[int]] = []
    for c in range(0, len(order), per_chunk):
        chunk = sorted(order[c : c + per_chunk], key=lambda i: examples[i].length)
        step, tokens = [], 0
        for i in chunk:
            if step and tokens + examples[i].length > tokens_per_step:
                steps.append(step)
                step, tokens = [], 0
            step.append(i)
            tokens += examples[i].length
        if step:
            steps.append(step)
    random.Random(f"sft-steps-{seed}-{epoch}").shuffle(steps)  # lengths mixed over the epoch
    return steps


def collate(rows: list[SFTExample], pad_id: int, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (n, L) right-padded, target mask (n, L−1) float: 1 where column t+1 is a response token)."""
    width = max(e.length for e in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width - 1)
    for i, e in enumerate(rows):
        seq = e.prompt_ids + e.response_ids
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, len(e.prompt_ids) - 1 : len(seq) - 1] = 1.0
    return ids.to(device), mask.to(device)


def micro_batches(rows: list[SFTExample], max_tokens: int) -> list[list[SFTExample]]:
    """Consecutive rows (a step is length-sorted) whose padded size stays within ``max_tokens``."""
    out, cur = [], []
    for e in sorted(rows, key=lambda r: r.length):
        if cur and (len(cur) + 1) * max(e.length, max(x.length for x in cur)) > max_tokens:
            out.append(cur)
            cur = []
        cur.append(e)
    return out + ([cur] if cur else [])


def response_nll(model, ids: torch.Tensor, mask: torch.Tensor, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of −log π over response tokens, their count) for one micro-batch: through
    ``fasttrain.response_nll`` (logits of response positions only, fused norms) for a Llama-family
    model that is not sharded, else the model's own forward (``response_nll_reference``).
    ``bf16``: matmuls under bf16 autocast (the fast path keeps attention and the loss in fp32)."""
    if fasttrain.supported(model) and not distributed.sharded(model):
        return fasttrain.response_nll(model, ids, mask, bf16=bf16)
    return response_nll_reference(model, ids, mask, bf16=bf16)


def response_nll_reference(model, ids: torch.Tensor, mask: torch.Tensor,
                           bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``response_nll`` by the model's own forward: logits at every position, masked afterwards."""
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids[:, :-1]).logits.float()
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
    nll = nll.view_as(mask)
    return torch.where(mask > 0, nll, torch.zeros_like(nll)).sum(), mask.sum()


def rank_batches(rows: list[SFTExample], pad_id: int, device, max_tokens: int, model=None):
    """This rank's micro-batches of ``rows`` as (ids, mask): rows[rank::W] (all rows in one process).
    With a sharded (FSDP) ``model`` every rank must run as many forward passes, so a rank with
    fewer micro-batches adds empty ones: two pad tokens and a zero mask, which add 0 to the loss."""
    mine = micro_batches(sorted(rows, key=lambda e: e.length)[distributed.rank() :: distributed.world()], max_tokens)
    # the count is agreed before any forward: a collective between two ranks' forwards would deadlock
    extra = distributed.max_count(len(mine)) - len(mine) if model is not None and distributed.sharded(model) else 0
    for mb in mine:
        yield collate(mb, pad_id, device)
    for _ in range(extra):
        yield torch.full((1, 2), pad_id, dtype=torch.long, device=device), torch.zeros(1, 1, device=device)


def sft_step(model, optimizer: torch.optim.Optimizer, rows: list[SFTExample], pad_id: int, lr: float,
             micro_batch_tokens: int = 2048, grad_clip: float = 1.0, bf16: bool = False) -> dict[str, float]:
    """One optimizer step on ``rows`` (see the module docstring for the loss); returns
    loss, tokens, grad_norm; a non-finite loss or gradient skips the step (``skipped`` = 1).
    ``bf16``: mixed precision (``response_nll``); the weights and AdamW stay fp32.

    Under torchrun every rank gets the same ``rows`` and runs rows[rank::W] of them length-sorted
    (so the ranks' token counts are close); each divides by the global token count and the
    gradients are summed (``distributed.sum_gradients``, or FSDP's reduce-scatter for a sharded
    model), so the step equals the single-process one. A sharded model runs every micro-batch
    even after a non-finite one (its collectives must match across ranks); the step is skipped."""
    device = next(model.parameters()).device
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    total = sum(len(e.response_ids) for e in rows)
    loss_sum, finite, fsdp = 0.0, True, distributed.sharded(model)
    for ids, mask in rank_batches(rows, pad_id, device, micro_batch_tokens, model):
        nll, _ = response_nll(model, ids, mask, bf16)
        if not torch.isfinite(nll):
            finite = False
            if not fsdp:
                break
        (nll / total).backward()
        loss_sum += float(nll.detach())
    if not distributed.all_true(finite):
        optimizer.zero_grad(set_to_none=True)
        return {"loss": float("nan"), "tokens": float(total), "skipped": 1.0}
    params = [p for p in model.parameters() if p.requires_grad]
    if not fsdp:
        distributed.sum_gradients(params)
    (loss_sum,) = distributed.sum_floats(loss_sum)
    gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm  # a DTensor under FSDP
    if not torch.isfinite(gnorm):
        optimizer.zero_grad(set_to_none=True)
        return {"loss": loss_sum / total, "tokens": float(total), "skipped": 1.0}
    optimizer.step()
    return {"loss": loss_sum / total, "tokens": float(total), "grad_norm": float(gnorm), "skipped": 0.0}


@torch.no_grad()
def evaluate_nll(model, examples: list[SFTExample], pad_id: int, micro_batch_tokens: int = 2048) -> dict[str, float]:
    """Held-out response-token loss and perplexity."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    nll_sum, count = 0.0, 0.0
    for ids, mask in rank_batches(examples, pad_id, device, micro_batch_tokens, model):
        nll, n = response_nll(model, ids, mask)
        nll_sum, count = nll_sum + float(nll), count + float(n)
    nll_sum, count = distributed.sum_floats(nll_sum, count)  # torchrun: each rank scored rows[rank::W]
    model.train(was)
    loss = nll_sum / max(count, 1.0)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}
