"""The rollout engine: batched sampling from any HF causal LM with a KV cache.

    engine = HFEngine(model, tokenizer)
    out = engine.generate(prompts, SamplingParams(max_new_tokens=128, temperature=1.0), n=16)
    out.samples[i * 16 + j]   # prompt i, sample j: completion ids, log-probs, text, finish reason

How it works (one chunk of prompts at a time):
1. Prefill: the distinct prompts, left-padded, go through the model once; their KV cache is
   then repeated ``n`` times, so G samples of one prompt share one prompt computation.
2. Decode: one token per step for every live sample; a sample that emits EOS or completes a
   stop string (e.g. ``</answer>``) leaves the batch (its rows are dropped from the cache), so
   late steps cost only what is still running.
3. Log-probs are those of the sampled tokens under softmax(logits / temperature), before
   top-k/top-p truncation: the same quantity the policy update computes, so with μ = 1 the
   update can reuse them as π_old (tests check them against a full forward pass).

Layout: ``samples`` is flat, N = len(prompts)·n, prompt-major (prompt i's samples are
consecutive), which is the layout ``grpo.group_advantages`` expects. The ``Engine`` protocol
is all the trainers use, so a vLLM engine can sit behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    stop: tuple[str, ...] = ("</answer>",)
    seed: int | None = None


@dataclass
class Sample:
    prompt_ids: list[int]
    completion_ids: list[int]  # includes the EOS / stop token that ended it
    logprobs: list[float]  # one per completion token
    text: str  # decoded completion, cut right after the stop string, without EOS
    finish_reason: str  # "stop" (stop string), "eos", or "length"


@dataclass
class RolloutOutput:
    samples: list[Sample]
    n: int
    stats: dict[str, float] = field(default_factory=dict)


class Engine(Protocol):
    def generate(self, prompts: list[str], params: SamplingParams, n: int = 1) -> RolloutOutput: ...


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Mask logits outside the top-k and outside the smallest set with cumulative prob ≥ top_p.

    logits: (A, V) -> (A, V) with -inf where filtered. The most likely token always survives.
    """
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        cum = probs.cumsum(-1)
        drop = (cum - probs) >= top_p  # mass before this token already reaches top_p
        drop[:, 0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


def sample_next(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row. logits (A, V) float -> (tokens (A,), logprobs (A,))."""
    if params.temperature <= 0:
        logp = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(-1)
    else:
        scaled = logits / params.temperature
        logp = torch.log_softmax(scaled, dim=-1)
        filtered = filter_logits(scaled, params.top_k, params.top_p)
        probs = torch.softmax(filtered, dim=-1)
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


class HFEngine:
    """Sampling for a ``transformers`` causal LM (see module docstring)."""

    def __init__(self, model, tokenizer, max_batch: int = 256):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch  # max sequences decoded at once (prompts chunked to fit)
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> set[int]:
        ids = set()
        eos = self.tokenizer.eos_token_id
        if eos is not None:
            ids.add(int(eos))
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif isinstance(gen_eos, (list, tuple)):
            ids.update(int(i) for i in gen_eos)
        return ids

    @torch.no_grad()
    def generate(self, prompts: list[str], params: SamplingParams, n: int = 1) -> RolloutOutput:
        if n < 1:
            raise ValueError("n must be >= 1")
        device = next(self.model.parameters()).device
        gen = torch.Generator(device=device)
        gen.manual_seed(params.seed if params.seed is not None else int(torch.randint(0, 2**31, (1,)).item()))
        per_chunk = max(1, self.max_batch // n)
        samples: list[Sample] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(prompts), per_chunk):
                samples.extend(self._generate_chunk(prompts[start : start + per_chunk], params, n, gen, device))
        finally:
            self.model.train(was_training)
        return RolloutOutput(samples=samples, n=n)

    def _generate_chunk(self, prompts, params, n, gen, device) -> list[Sample]:
        from transformers import DynamicCache

        tok = self.tokenizer
        enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(len(e) for e in enc)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc], device=device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1, :].float().repeat_interleave(n, dim=0)
        mask = mask.repeat_interleave(n, dim=0)
        next_pos = pos[:, -1:].repeat_interleave(n, dim=0) + 1
        total = len(prompts) * n
        comp: list[list[int]] = [[] for _ in range(total)]
        lps: list[list[float]] = [[] for _ in range(total)]
        reason = ["length"] * total
        live = torch.arange(total, device=device)  # sample index of each batch row
        stop_enc = [tok(s, add_special_tokens=False)["input_ids"] for s in params.stop]
        stop_tail = max([len(e) for e in stop_enc] + [1]) + 2
        # fast path: every stop string is an added token (like </answer> in r1lab's tokenizer) ->
        # compare ids, no decoding. Otherwise decode the tail of each live sample every step.
        added = set(getattr(tok, "get_added_vocab", dict)().values())
        single = stop_enc and all(len(e) == 1 and e[0] in added for e in stop_enc)
        stop_ids = {e[0] for e in stop_enc} if single else None
        for step in range(params.max_new_tokens):
            tokens, logp = sample_next(logits, params, gen)
            tok_list, lp_list, live_list = tokens.tolist(), logp.tolist(), live.tolist()
            keep = []
            for row, (s, t, lp) in enumerate(zip(live_list, tok_list, lp_list)):
                comp[s].append(t)
                lps[s].append(lp)
                if t in self.eos_ids:
                    reason[s] = "eos"
                elif stop_ids is not None and t in stop_ids:
                    reason[s] = "stop"
                elif stop_ids is None and params.stop and self._hit_stop(comp[s], params.stop, stop_tail):
                    reason[s] = "stop"
                else:
                    keep.append(row)
            if not keep or step == params.max_new_tokens - 1:
                break
            if len(keep) < len(live_list):
                idx = torch.tensor(keep, device=device)
                cache.batch_select_indices(idx)
                live, tokens, mask, next_pos = live[idx], tokens[idx], mask[idx], next_pos[idx]
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=next_pos,
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()
            next_pos = next_pos + 1
        samples = []
        for s in range(total):
            ids_s = comp[s]
            body = ids_s[:-1] if reason[s] == "eos" else ids_s
            text = tok.decode(body, skip_special_tokens=False)
            if reason[s] == "stop":
                text = _cut_after_stop(text, params.stop)
            samples.append(Sample(enc[s // n], ids_s, lps[s], text, reason[s]))
        return samples

    def _hit_stop(self, ids: list[int], stops: tuple[str, ...], tail: int) -> bool:
        text = self.tokenizer.decode(ids[-tail:], skip_special_tokens=False)
        return any(s in text for s in stops)


def _cut_after_stop(text: str, stops: tuple[str, ...]) -> str:
    ends = [text.find(s) + len(s) for s in stops if s in text]
    return text[: min(ends)] if ends else text
