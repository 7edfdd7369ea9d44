"""Rollout samples -> padded tensors, and per-token log-probs of completions under a model.

A packed batch holds N = B·G sequences ``prompt + completion``, right-padded to length L.
Only the completion region matters to the losses, so tensors are cut to the columns
``[start, L)`` where ``start`` = shortest prompt length: ``logp``, ``mask`` etc. are (N, T)
with T = L − start, and ``mask[i, t]`` = 1 where column start+t holds a completion token of i.
Right padding with a causal model needs no attention mask (real tokens never see the pads
after them) and no position ids, so every forward pass here is the plain one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from r1lab.engine.rollout import Sample
from r1lab.train.logprobs import entropy_from_logits, token_logprobs_chunked


@dataclass
class Packed:
    input_ids: torch.Tensor  # (N, L) prompt + completion, right-padded
    mask: torch.Tensor  # (N, T) float, 1 on completion tokens (columns start..L-1)
    sample_logp: torch.Tensor  # (N, T) log-probs recorded at sampling time (0 under the mask)
    start: int  # first column of the completion region
    lengths: torch.Tensor  # (N,) completion lengths
    prompts: list[list[int]] | None = None  # the U distinct prompts (token ids)
    prompt_index: torch.Tensor | None = None  # (N,) which of ``prompts`` row i continues
    completions: torch.Tensor | None = None  # (N, C) completion ids, left-aligned, right-padded


def pack(samples: list[Sample], pad_id: int, device: str | torch.device = "cpu") -> Packed:
    n = len(samples)
    full = [s.prompt_ids + s.completion_ids for s in samples]
    width = max(len(f) for f in full)
    start = min(len(s.prompt_ids) for s in samples)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros(n, width - start)
    old = torch.zeros(n, width - start)
    for i, (s, f) in enumerate(zip(samples, full)):
        ids[i, : len(f)] = torch.tensor(f, dtype=torch.long)
        a = len(s.prompt_ids) - start
        b = a + len(s.completion_ids)
        mask[i, a:b] = 1.0
        old[i, a:b] = torch.tensor(s.logprobs, dtype=torch.float32)
    lengths = torch.tensor([len(s.completion_ids) for s in samples])
    distinct: dict[tuple[int, ...], int] = {}
    index = torch.tensor([distinct.setdefault(tuple(s.prompt_ids), len(distinct)) for s in samples])
    comps = torch.full((n, max(1, int(lengths.max()))), pad_id, dtype=torch.long)
    for i, s in enumerate(samples):
        comps[i, : len(s.completion_ids)] = torch.tensor(s.completion_ids, dtype=torch.long)
    return Packed(ids.to(device), mask.to(device), old.to(device), start, lengths.to(device),
                  [list(p) for p in distinct], index.to(device), comps.to(device))


def row_logprobs(model, pk: Packed, rows: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False,
                 shared=None) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """log π of the completion tokens of ``rows`` in the packed layout: (logp (n, T'), entropy, T').

    ``shared`` (a ``fasttrain.SharedPrompts`` over ``pk.prompts``): the prompts are not run
    again (shared-prefix forward); None: the plain forward over ``prompt + completion``.
    Both return the same numbers (tests)."""
    ids, t = trim(pk.input_ids, rows, pk.start, pk.mask)
    if shared is None:
        logp, ent = completion_logprobs(model, ids, pk.start, temperature, with_entropy)
        return logp, ent, t
    c = int(pk.lengths[rows].max())
    logp_c, ent_c = shared.logprobs(pk.prompt_index[rows], pk.completions[rows, :c], temperature, with_entropy)
    # completion column j of row i sits at packed column offset_i + j, offset_i = prompt_i − start
    offset = shared.lengths[pk.prompt_index[rows]] - pk.start
    j = torch.arange(t, device=offset.device)[None] - offset[:, None]  # (n, T')
    inside = (j >= 0) & (j < c)
    j = j.clamp(0, c - 1)

    def to_packed(x):
        return None if x is None else torch.where(inside, x.gather(1, j), torch.zeros((), dtype=x.dtype))

    return to_packed(logp_c), to_packed(ent_c), t


def completion_logprobs(
    model, input_ids: torch.Tensor, start: int, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(token_t | prefix) for columns start..L-1 of ``input_ids`` (N, L) -> (N, L − start).

    Logits are divided by the sampling temperature, as at sampling time, so that these match
    the rollout's log-probs. Only the rows of the logits that predict completion columns are
    turned into log-probs. Entropy (N, T) is computed without gradient when asked.
    """
    logits = model(input_ids=input_ids).logits  # (N, L, V)
    return logits_to_logprobs(logits[:, start - 1 : -1, :], input_ids[:, start:], temperature, with_entropy)


def logits_to_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0,
                       with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logits (N, T, V) that predict ``tokens`` (N, T) -> (log π(tokens) under softmax(logits / T),
    entropy (N, T) without gradient when asked)."""
    if temperature != 1.0:
        logits = logits / temperature
    logp = token_logprobs_chunked(logits, tokens)
    ent = None
    if with_entropy:
        with torch.no_grad():
            ent = entropy_from_logits(logits.detach().float())
    return logp, ent


def micro_batches(n: int, size: int, lengths: torch.Tensor | None = None, max_tokens: int = 0,
                  start: int = 0) -> list[torch.Tensor]:
    """Index sets of at most ``size`` rows whose union is all n rows.

    With ``lengths`` (completion tokens of each row), rows are sorted longest first so that each
    micro-batch pads little (length bucketing). With ``max_tokens`` > 0 as well, a micro-batch
    also stops growing before its padded size rows·(start + longest) exceeds ``max_tokens``
    (always at least one row): short rows then go in large micro-batches and long rows in
    small ones, so compute and activation memory per micro-batch stay about constant.
    """
    order = torch.argsort(lengths.cpu(), descending=True, stable=True) if lengths is not None else torch.arange(n)
    if lengths is None or max_tokens <= 0:
        return [order[i : i + size] for i in range(0, n, size)]
    lens = lengths.cpu()[order].tolist()
    out, i = [], 0
    while i < n:
        width = start + lens[i]  # the longest row of this micro-batch sets its padded width
        rows = max(1, min(size, max_tokens // max(width, 1), n - i))
        out.append(order[i : i + rows])
        i += rows
    return out


def trim(packed_ids: torch.Tensor, rows: torch.Tensor, start: int, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cut the right padding shared by ``rows``: returns (ids (n, L'), T') with T' = L' − start."""
    m = mask[rows]
    used = int(m.sum(0).nonzero().max().item()) + 1 if m.any() else 1
    return packed_ids[rows, : start + used], used
