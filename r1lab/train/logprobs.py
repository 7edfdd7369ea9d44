"""Log-probabilities and entropy of tokens from logits: the plain reference and the chunked fast path.

Shapes: N sequences, T tokens, V vocabulary. ``token_logprobs_chunked`` is what the trainer uses
(no full (N, T, V) float32 log_softmax); ``token_logprobs`` is the reference tests compare it to.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["entropy_from_logits", "token_logprobs", "token_logprobs_chunked"]



def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log π(tokens) = log_softmax(logits)[tokens], the plain reference version.

    Materialises a float32 (N, T, V) log_softmax (kept for backward under autograd); prefer
    ``token_logprobs_chunked`` for large V.

    Args:
        logits: (N, T, V), any float dtype (computed in float32).
        tokens: (N, T) int64 token ids; logits[:, t] must predict tokens[:, t] (shift first).

    Returns:
        (N, T) float32.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def token_logprobs_chunked(logits: Tensor, tokens: Tensor, chunk_size: int = 8) -> Tensor:
    """log π(tokens) = logits[tokens] − logsumexp(logits), ``chunk_size`` rows at a time.

    Same value as ``token_logprobs`` without a full (N, T, V) log_softmax: each chunk of rows
    is upcast to float32 on its own, so the float32 peak is one chunk (under ``no_grad``, as
    for old/ref log-probs). Under autograd logsumexp keeps each float32 chunk for backward.

    Args:
        logits: (N, T, V), any float dtype.
        tokens: (N, T) int64.
        chunk_size: rows of N per chunk.

    Returns:
        (N, T) float32.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be ≥ 1, got {chunk_size}")
    out = []
    for lg, tk in zip(logits.split(chunk_size, 0), tokens.split(chunk_size, 0)):
        lg = lg.float()
        picked = lg.gather(-1, tk.unsqueeze(-1)).squeeze(-1)
        out.append(picked - torch.logsumexp(lg, dim=-1))
    return torch.cat(out, 0)


def entropy_from_logits(logits: Tensor, chunk_size: int | None = None) -> Tensor:
    """Entropy of the next-token distribution: H = logsumexp(z) − Σ_v softmax(z)_v z_v.

    Stable for any logits, −inf (masked-out vocabulary) included. Computed in float32,
    ``chunk_size`` rows of N at a time when given. Meant for logging (use under no_grad).

    Args:
        logits: (N, T, V).
        chunk_size: rows per chunk, or None for all at once.

    Returns:
        (N, T) float32.
    """
    chunks = [logits] if chunk_size is None else logits.split(chunk_size, 0)
    out = []
    for lg in chunks:
        z = lg.float()
        p = torch.softmax(z, dim=-1)
        pz = torch.where(p > 0, p * z, torch.zeros_like(z))  # 0 · (−inf) would be NaN
        out.append(torch.logsumexp(z, dim=-1) - pz.sum(-1))
    return torch.cat(out, 0)
