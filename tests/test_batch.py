"""Packing rollouts: the update's log-probs equal the sampling log-probs (so μ=1 can reuse them),
length-bucketed micro-batches cover every row once, trimming keeps all completion tokens."""

from __future__ import annotations

import torch

from r1lab.engine.rollout import HFEngine, SamplingParams
from r1lab.models import load_model, load_tokenizer
from r1lab.train.batch import completion_logprobs, micro_batches, pack, trim


def test_packed_logprobs_equal_sampling_logprobs(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    prompts = ["Use 4 8 6 to make 32.\n<think>", "Compute 3+4*2-11.\n<think>"]
    out = HFEngine(model, tok).generate(prompts, SamplingParams(max_new_tokens=20, temperature=0.8, seed=5), n=3)
    pk = pack(out.samples, tok.pad_token_id)
    with torch.no_grad():
        full, ent = completion_logprobs(model, pk.input_ids, pk.start, temperature=0.8, with_entropy=True)
    assert full.shape == pk.mask.shape
    assert torch.allclose(full * pk.mask, pk.sample_logp, atol=1e-4)
    # the entropies the engine records (zero logs them) are those of the trained policy too
    for i, s in enumerate(out.samples):
        a = len(s.prompt_ids) - pk.start
        assert len(s.entropies) == len(s.completion_ids)
        assert torch.allclose(torch.tensor(s.entropies), ent[i, a : a + len(s.entropies)], atol=1e-4)
    # micro-batched + trimmed == full batch
    for rows in micro_batches(len(out.samples), 4, pk.lengths):
        ids, t = trim(pk.input_ids, rows, pk.start, pk.mask)
        with torch.no_grad():
            part, _ = completion_logprobs(model, ids, pk.start, temperature=0.8)
        assert torch.allclose(part * pk.mask[rows, :t], pk.sample_logp[rows, :t], atol=1e-4)
        assert pk.mask[rows, t:].sum() == 0  # nothing trimmed away


def test_micro_batches_partition_rows():
    lengths = torch.tensor([5, 1, 9, 3, 7, 2, 8])
    parts = micro_batches(7, 3, lengths)
    assert sorted(torch.cat(parts).tolist()) == list(range(7))
    assert [len(p) for p in parts] == [3, 3, 1]
    assert lengths[parts[0]].tolist() == [9, 8, 7]  # longest first: little padding per micro-batch


def test_micro_batches_token_budget():
    # start (prompt width) 2: padded widths 11, 10, 9, 7, 5, 4, 3 for lengths 9, 8, 7, 5, 3, 2, 1
    lengths = torch.tensor([5, 1, 9, 3, 7, 2, 8])
    parts = micro_batches(7, 4, lengths, max_tokens=24, start=2)
    # by hand: 24 // 11 = 2 rows (9, 8); then 24 // 9 = 2 (7, 5); then 24 // 5 = 4, capped by 3 left
    assert [lengths[p].tolist() for p in parts] == [[9, 8], [7, 5], [3, 2, 1]]
    for p in parts:  # every micro-batch within budget: rows × (start + longest)
        assert len(p) * (2 + int(lengths[p].max())) <= 24
    # the size cap still applies, and a row longer than the budget still gets a micro-batch
    assert [len(p) for p in micro_batches(7, 2, lengths, max_tokens=1000, start=2)] == [2, 2, 2, 1]
    assert [len(p) for p in micro_batches(3, 8, torch.tensor([50, 1, 1]), max_tokens=10)] == [1, 2]
