"""The rollout engine: batched sampling from any HF causal LM with a KV cache.

    engine = HFEngine(model, tokenizer)
    out = engine.generate(prompts, SamplingParams(max_new_tokens=128, temperature=1.0), n=16)
    out.samples[i * 16 + j]   # prompt i, sample j: completion ids, log-probs, text, finish reason

How it works (one chunk of prompts at a time):
1. Prefill: the distinct prompts, left-padded, go through the model once; their KV cache is
   then repeated ``n`` times, so G samples of one prompt share one prompt computation.
2. Decode: one token per step for every live sample; a sample that emits EOS or completes a
   stop string (e.g. ``</answer>``) leaves the batch (its rows are dropped from the cache), so
   late steps cost only what is still running. Llama-family models (Llama, Qwen2, Qwen3,
   Mistral) decode through ``fastdecode.FastDecoder``, a lean step on the model's own weights;
   any other model through its own ``forward`` with an in-place KV cache
   (``kvcache.HFDecoder``). Both give the model's logits (tests compare them to 1e-5).
   Tokens are drawn by inverse-CDF sampling, one uniform per row, from a per-sample random
   stream: u = hash(seed, sample index, decode step) (``stream_uniforms``). A sample's tokens
   are therefore a function of (seed, its index, the model) alone, not of which other samples
   share its batch, chunk or rank: a global batch split across data-parallel ranks
   (``stream_offset``) samples what one process samples.
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

from r1lab.engine.fastdecode import FastDecoder, supported
from r1lab.engine.kvcache import HFDecoder

REASONS = ("length", "eos", "stop")  # Sample.finish_reason by code


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    stop: tuple[str, ...] = ("</answer>",)
    seed: int | None = None  # None = a fresh seed from torch's global generator
    stream_offset: int = 0  # index of the first sample's random stream (a rank's share of a batch)


@dataclass
class Sample:
    prompt_ids: list[int]
    completion_ids: list[int]  # includes the EOS / stop token that ended it
    logprobs: list[float]  # one per completion token
    text: str  # decoded completion, cut right after the stop string, without EOS
    finish_reason: str  # "stop" (stop string), "eos", or "length"
    entropies: list[float] | None = None  # entropy of softmax(logits / T) at each completion token


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


_M32 = 0xFFFFFFFF


def _mix32(x):
    """A 32-bit integer finaliser (Wellons' "lowbias32"): int64 values in [0, 2^32) -> same range.
    Products wrap in int64 and are masked back to their low 32 bits, so it is exact on any device."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def stream_uniforms(seed: int, index: torch.Tensor, step: int) -> torch.Tensor:
    """Counter-based uniforms: u = hash(seed, index, step) in [0, 1), float64, 48 random bits.

    index (A,) int64: each row's sample index (its random stream) -> (A,). Written by hand because
    torch's generators are per-batch streams (a row's draw would depend on its batch-mates) and
    ``torch.Generator`` per row costs one call per sample per token. No library offers a
    vectorised keyed hash on tensors; this one is a few integer ops.
    """
    key = _mix32((seed & _M32) ^ _mix32(((seed >> 32) & _M32) + 0x3C6EF372))
    h = _mix32((index.to(torch.int64) * 0x9E3779B9 + key) & _M32)
    h = _mix32(h ^ ((step * 0x85EBCA6B + 0x27D4EB2F) & _M32))
    low = _mix32(h ^ 0x5BD1E995)  # 24 more bits: tokens far below 2^-24 stay reachable
    return (h >> 8).to(torch.float64) * (2.0**-24) + (low >> 8).to(torch.float64) * (2.0**-48)


def sample_next(
    logits: torch.Tensor, params: SamplingParams, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one token per row. logits (A, V) float, u (A,) uniforms in [0, 1) ->
    (tokens (A,), logprobs (A,), entropy (A,)).

    Inverse-CDF sampling: one uniform u_a per row, token = the first index whose cumulative
    probability exceeds u_a·Σp (one random number per row where ``torch.multinomial`` draws
    V exponentials; tests check its frequencies). Log-probs and the entropy
    H = −Σ_v p_v log p_v are of softmax(logits / T), before top-k/top-p truncation: the
    policy the update trains, so the trainer logs its entropy from here, for every sample.
    """
    logp = torch.log_softmax(logits / params.temperature if params.temperature > 0 else logits, dim=-1)
    full = logp.exp()
    entropy = -(full * logp).sum(-1)
    if params.temperature <= 0:
        tokens = logits.argmax(-1)
    else:
        if params.top_k or params.top_p < 1.0:
            probs = torch.softmax(filter_logits(logp, params.top_k, params.top_p), dim=-1)
        else:
            probs = full
        tokens = sample_inverse_cdf(probs, u)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1), entropy


def sample_inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """probs (A, V) ≥ 0, rows not necessarily normalised, u (A,) uniforms in [0, 1) -> (A,)
    indices, P(i) = p_i / Σp.

    A zero-probability token is never returned: u < cdf[-1] strictly, and the first index with
    cdf > u has cdf[i] > cdf[i-1]. The CDF is summed in float64: in float32 its rounding
    (~1e-7 of the total) is as large as the tail tokens' probabilities, so which tail token a
    given u picks would depend on float noise in the logits (a different batch, or rank).
    """
    cdf = probs.to(torch.float64).cumsum(-1)
    total = cdf[:, -1:]
    u = u.to(device=cdf.device, dtype=cdf.dtype)[:, None] * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


class HFEngine:
    """Sampling for a ``transformers`` causal LM (see module docstring)."""

    def __init__(self, model, tokenizer, max_batch: int = 256, fast: bool | None = None):
        self.model = model
        # fast: the lean Llama-family decode step (fastdecode.py); None = use it when supported
        self.fast = supported(model) if fast is None else fast
        if self.fast and not supported(model):
            raise ValueError(f"fast decoding does not support model_type {model.config.model_type!r}")
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

    # inference_mode, not no_grad: no view/version tracking on the ~150 small ops of a decode step
    # (A/B, 8×8 and 16×16 prompts × samples: +11.8% and +17% tokens/s). Nothing made here
    # reaches autograd: samples hold Python lists.
    @torch.inference_mode()
    def generate(self, prompts: list[str], params: SamplingParams, n: int = 1) -> RolloutOutput:
        if n < 1:
            raise ValueError("n must be >= 1")
        device = next(self.model.parameters()).device
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**31, (1,)).item())
        per_chunk = max(1, self.max_batch // n)
        samples: list[Sample] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(prompts), per_chunk):
                first = params.stream_offset + start * n  # random stream of the chunk's first sample
                samples.extend(self._generate_chunk(prompts[start : start + per_chunk], params, n, seed, first, device))
        finally:
            self.model.train(was_training)
        return RolloutOutput(samples=samples, n=n)

    def _generate_chunk(self, prompts, params, n, seed, first, device) -> list[Sample]:
        tok = self.tokenizer
        enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        width, steps = max(len(e) for e in enc), params.max_new_tokens
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc], device=device)
        decoder = FastDecoder(self.model) if self.fast else HFDecoder(self.model)
        logits = decoder.prefill(ids, mask, n, capacity=width + steps)
        total = len(prompts) * n
        next_pos = torch.tensor([len(e) for e in enc], device=device).repeat_interleave(n)
        out_tok = torch.full((total, steps), pad, dtype=torch.long, device=device)
        out_lp = torch.zeros((total, steps), dtype=torch.float32, device=device)
        out_ent = torch.zeros((total, steps), dtype=torch.float32, device=device)
        length = torch.full((total,), steps, dtype=torch.long, device=device)
        reason = torch.zeros(total, dtype=torch.long, device=device)  # index into REASONS
        live = torch.arange(total, device=device)  # sample index of each batch row
        stop_enc = [tok(s, add_special_tokens=False)["input_ids"] for s in params.stop]
        stop_tail = max([len(e) for e in stop_enc] + [1]) + 2
        # fast path: every stop string is an added token (like </answer> in r1lab's tokenizer) ->
        # compare ids on the tensor. Otherwise decode the tail of each live sample every step.
        added = set(getattr(tok, "get_added_vocab", dict)().values())
        single = not stop_enc or all(len(e) == 1 and e[0] in added for e in stop_enc)
        eos_t = torch.tensor(sorted(self.eos_ids), dtype=torch.long, device=device)
        stop_t = torch.tensor(sorted({e[0] for e in stop_enc} if single else ()), dtype=torch.long, device=device)
        for step in range(steps):
            tokens, logp, ent = sample_next(logits, params, stream_uniforms(seed, live + first, step))
            out_tok[live, step] = tokens
            out_lp[live, step] = logp
            out_ent[live, step] = ent
            is_eos = torch.isin(tokens, eos_t)
            is_stop = torch.isin(tokens, stop_t) & ~is_eos
            if not single:
                is_stop |= self._stop_rows(out_tok, live, step, params.stop, stop_tail) & ~is_eos
            ended = is_eos | is_stop
            if step == steps - 1:
                reason[live[ended]] = torch.where(is_eos[ended], 1, 2)
                break
            if bool(ended.any()):
                done = live[ended]
                reason[done] = torch.where(is_eos[ended], 1, 2)
                length[done] = step + 1
                if bool(ended.all()):
                    break
                order = decoder.keep(~ended)
                live, tokens, next_pos = live[order], tokens[order], next_pos[order]
            logits = decoder.step(tokens, next_pos)
            next_pos = next_pos + 1
        samples = []
        rows = zip(out_tok.tolist(), out_lp.tolist(), out_ent.tolist(), length.tolist(), reason.tolist())
        for s, (row, lp, ent, k, r) in enumerate(rows):
            ids_s, why = row[:k], REASONS[r]
            text = tok.decode(ids_s[:-1] if why == "eos" else ids_s, skip_special_tokens=False)
            if why == "stop":
                text = _cut_after_stop(text, params.stop)
            samples.append(Sample(enc[s // n], ids_s, lp[:k], text, why, ent[:k]))
        return samples

    def _stop_rows(self, out_tok, live, step, stops, tail) -> torch.Tensor:
        """Slow path for stop strings that span several tokens: decode each live row's tail."""
        lo = max(0, step + 1 - tail)
        rows = out_tok[live, lo : step + 1].tolist()
        hit = [any(s in self.tokenizer.decode(r, skip_special_tokens=False) for s in stops) for r in rows]
        return torch.tensor(hit, dtype=torch.bool, device=live.device)


def _cut_after_stop(text: str, stops: tuple[str, ...]) -> str:
    ends = [text.find(s) + len(s) for s in stops if s in text]
    return text[: min(ends)] if ends else text
