"""The update's fast paths against plain references: the shared-prefix forward gives the model's
own log-probs and gradients, and the optimizer step is the same with it on or off and with
zero-advantage rows skipped or run."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from test_fastdecode import FAMILIES, _tiny

from r1lab.engine.rollout import Sample
from r1lab.rl.grpo import group_advantages
from r1lab.rl.learner import Learner
from r1lab.rl.settings import RLSettings
from r1lab.rl.update import RolloutBatch, update_minibatch
from r1lab.train.batch import micro_batches, pack, row_logprobs
from r1lab.train.fasttrain import SharedPrompts, supported


def _batch(vocab: int, group: int = 3, seed: int = 0):
    """Rows of 3 prompts (lengths 4, 7, 5) × ``group`` completions of 1..9 tokens."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(2, vocab, (k,), generator=g).tolist() for k in (4, 7, 5)]
    samples = []
    for i in range(len(prompts) * group):
        k = 1 if i == 1 else int(torch.randint(1, 10, (1,), generator=g))  # a one-token completion too
        comp = torch.randint(2, vocab, (k,), generator=g).tolist()
        samples.append(Sample(prompts[i // group], comp, [0.0] * k, "", "stop"))
    return pack(samples, pad_id=0)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_shared_prefix_logprobs_and_grads_equal_plain_forward(name):
    model = _tiny(name.split("_")[0], **FAMILIES[name]).train()
    assert supported(model)
    pk = _batch(61)
    assert len(pk.prompts) == 3 and pk.prompt_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    weight = torch.randn(pk.mask.shape, generator=torch.Generator().manual_seed(3))
    results = []
    for use_shared in (False, True):
        model.zero_grad()
        shared = SharedPrompts(model, pk.prompts, 0) if use_shared else None
        logps = torch.zeros_like(pk.mask)
        for rows in micro_batches(len(pk.lengths), 4, pk.lengths):  # micro-batches mix prompts
            logp, ent, t = row_logprobs(model, pk, rows, temperature=0.7, with_entropy=True, shared=shared)
            assert ent.shape == logp.shape
            (logp * pk.mask[rows, :t] * weight[rows, :t]).sum().backward()
            logps[rows, :t] = logp.detach() * pk.mask[rows, :t]
        if shared is not None:
            shared.backward()
        results.append((logps, {k: p.grad.clone() for k, p in model.named_parameters()}))
    (plain, g_plain), (fast, g_fast) = results
    assert pk.mask.sum() > 0 and torch.allclose(fast, plain, atol=1e-5), (fast - plain).abs().max()
    for k in g_plain:
        scale = g_plain[k].abs().max().clamp(min=1e-6)
        assert torch.allclose(g_fast[k], g_plain[k], atol=1e-5 * float(scale) + 1e-7), k


def test_shared_prompts_run_only_what_is_used():
    model = _tiny("qwen2")
    pk = _batch(61)
    with torch.no_grad():
        shared = SharedPrompts(model, pk.prompts, 0, use=[2, 0])
        rows = torch.tensor([0, 6, 8])
        fast, _, t = row_logprobs(model, pk, rows, shared=shared)
        plain, _, _ = row_logprobs(model, pk, rows)
        assert torch.allclose(fast * pk.mask[rows, :t], plain * pk.mask[rows, :t], atol=1e-5)
        with pytest.raises(ValueError, match="use"):
            shared.logprobs(pk.prompt_index[torch.tensor([3])], pk.completions[[3], :2])


def _update(model, pk, adv, shared: bool, train, opt_cls=torch.optim.SGD):
    """One GRPO optimizer step through rl.update.update_minibatch; returns (new weights, optimizer).

    SGD with lr 1 turns the weight change into the (clipped) gradient itself, so that float
    rounding is not amplified (AdamW's first step divides each gradient by its own size)."""
    model = copy.deepcopy(model).train()
    opt = opt_cls(model.parameters(), lr=1.0)
    s = RLSettings(micro_batch=4, micro_batch_tokens=0, lr=1.0, warmup=0, norm="token", beta=0.0,
                   max_new_tokens=9, prompts_per_step=3, group_size=3, shared_prompt=shared)
    batch = RolloutBatch(pk, pk.mask, pk.sample_logp, None, adv, train=train)
    n = len(pk.lengths)
    ok = update_minibatch(batch, torch.arange(n), Learner(model, opt, pad_id=0), s, lr=1.0, agg={})
    assert ok
    return {k: p.detach().clone() for k, p in model.named_parameters()}, opt


def test_update_is_the_same_shared_or_plain_and_with_zero_advantage_rows_skipped():
    model = _tiny("qwen2")
    pk = _batch(61)
    with torch.no_grad():  # π_old = the model's own log-probs, as with μ = 1
        pk = dataclasses.replace(pk, sample_logp=row_logprobs(model, pk, torch.arange(9))[0] * pk.mask)
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0, 1.0]), 3)
    assert adv[3:6].abs().sum() == 0  # the middle group has no spread
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    ref, _ = _update(model, pk, adv, shared=False, train=None)
    assert max(float((ref[k] - before[k]).abs().max()) for k in ref) > 1e-3  # it did move
    for shared, train in ((True, None), (False, adv != 0), (True, adv != 0)):
        new, _ = _update(model, pk, adv, shared, train)
        for k in ref:
            assert torch.allclose(new[k] - before[k], ref[k] - before[k], atol=1e-6), (shared, train, k)


def test_all_rows_skipped_still_steps_adamw_on_a_zero_gradient():
    # the plain path would backward zeros and AdamW would step (moment decay, step count); a
    # parameter without .grad would be skipped by AdamW instead: the fast path must not differ
    model = _tiny("qwen2")
    pk = _batch(61)
    zero = torch.zeros(9)
    _, opt = _update(model, pk, zero, shared=True, train=zero != 0, opt_cls=torch.optim.AdamW)
    for group in opt.param_groups:
        for p in group["params"]:
            assert p.grad is not None and not p.grad.any()
            assert int(opt.state[p]["step"]) == 1


def _sft_batch(seed: int, shapes) -> tuple[torch.Tensor, torch.Tensor]:
    """collate() of SFT rows with random tokens: (prompt length, response length) per row."""
    from r1lab.train.sft import SFTExample, collate

    g = torch.Generator().manual_seed(seed)
    rows = [SFTExample(torch.randint(2, 61, (p,), generator=g).tolist(), torch.randint(2, 61, (r,), generator=g).tolist())
            for p, r in shapes]
    return collate(rows, pad_id=0)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_sft_response_nll_and_grads_equal_the_models_own_forward(name):
    """SFT's fast loss (logits on response positions only, fused norms) against the plain one:
    right-padded rows of different lengths, prompts of different lengths."""
    from r1lab.train.sft import response_nll, response_nll_reference

    model = _tiny(name.split("_")[0], **FAMILIES[name]).train()
    ids, mask = _sft_batch(1, ((3, 5), (6, 1), (2, 9), (5, 4)))
    assert 0 < mask.sum() < mask.numel()  # pads and prompt positions are left out
    results = []
    for fn in (response_nll_reference, response_nll):
        model.zero_grad()
        nll, count = fn(model, ids, mask)
        nll.backward()
        results.append((float(nll.detach()), float(count), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (ref, n_ref, g_ref), (fast, n_fast, g_fast) = results
    assert n_ref == n_fast == 19 and abs(fast - ref) <= 1e-5 * abs(ref)
    for k in g_ref:
        scale = g_ref[k].abs().max().clamp(min=1e-6)
        assert torch.allclose(g_fast[k], g_ref[k], atol=1e-5 * float(scale) + 1e-7), k


def test_sft_bf16_autocast_stays_close_to_fp32():
    """Mixed precision (bf16 matmuls, fp32 weights/attention/loss): the loss within 1%, and every
    gradient pointing the same way as fp32's (cosine > 0.99); the weights stay fp32."""
    from r1lab.train.sft import response_nll

    model = _tiny("qwen2", **FAMILIES["qwen2"]).train()
    ids, mask = _sft_batch(2, ((4, 12), (7, 6), (3, 10)))
    out = []
    for bf16 in (False, True):
        model.zero_grad()
        nll, _ = response_nll(model, ids, mask, bf16=bf16)
        assert nll.dtype == torch.float32
        nll.backward()
        out.append((float(nll.detach()), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (l32, g32), (l16, g16) = out
    assert abs(l16 - l32) <= 0.01 * l32 and l16 != l32  # bf16 did run, and stayed close
    for k in g32:
        assert g16[k].dtype == torch.float32
        cos = F.cosine_similarity(g16[k].flatten(), g32[k].flatten(), dim=0)
        assert cos > 0.99, (k, float(cos))


def test_bf16_row_grid_pads_the_token_matrix_and_changes_nothing(monkeypatch):
    """Under CPU bf16 autocast the per-token layers run on n·L rows rounded up to ROW_GRID (zero
    rows, so oneDNN sees few distinct matmul shapes): the loss and gradients equal the unpadded
    bf16 run's to bf16 rounding; fp32 is never padded."""
    from r1lab.train import fasttrain
    from r1lab.train.sft import response_nll

    model = _tiny("qwen2", **FAMILIES["qwen2"]).train()
    ids, mask = _sft_batch(3, ((4, 9), (6, 5), (2, 11)))
    seen = []
    pad_rows = fasttrain._pad_rows
    monkeypatch.setattr(fasttrain, "_pad_rows", lambda t, pad: (seen.append((t.shape[0], pad)), pad_rows(t, pad))[1])
    out = []
    for grid in (fasttrain.ROW_GRID, 0):
        monkeypatch.setattr(fasttrain, "ROW_GRID", grid)
        model.zero_grad()
        nll, _ = response_nll(model, ids, mask, bf16=True)
        nll.backward()
        out.append((float(nll.detach()), {k: p.grad.clone() for k, p in model.named_parameters()}))
    rows_in = ids.shape[0] * (ids.shape[1] - 1)
    assert seen[0] == (rows_in, 256 - rows_in % 256)  # padded up to the grid under bf16 ...
    assert all(pad == 0 for _, pad in seen[len(seen) // 2:])  # ... and not with the grid off
    (lp, gp), (lu, gu) = out
    assert abs(lp - lu) <= 1e-5 * abs(lu)
    for k in gu:
        scale = gu[k].abs().max().clamp(min=1e-6)
        # bf16 gradients round at 2^-8: oneDNN blocks a different M differently (measured ≤ 0.0066 of the max)
        assert torch.allclose(gp[k], gu[k], atol=1e-2 * float(scale)), k
    seen.clear()
    monkeypatch.setattr(fasttrain, "ROW_GRID", 256)
    response_nll(model, ids, mask, bf16=False)
    assert seen and all(pad == 0 for _, pad in seen)  # fp32 (MKL) is not padded


def test_hand_written_rms_norm_matches_f_rms_norm_and_hand_numbers():
    """``_RMSNorm`` (CPU training path): x = [3, 4], w = [1, 2], ε = 0 → r = 1/√12.5, y = [3r, 8r];
    and values and both gradients equal ``F.rms_norm``'s on random (2, 3, 8) rows."""
    from r1lab.train.fasttrain import _RMSNorm

    y = _RMSNorm.apply(torch.tensor([[3.0, 4.0]]), torch.tensor([1.0, 2.0]), 0.0)
    r = 1 / 12.5 ** 0.5
    assert torch.allclose(y, torch.tensor([[3 * r, 8 * r]]))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, generator=g)
    w = 1 + 0.1 * torch.randn(8, generator=g)
    up = torch.randn(2, 3, 8, generator=g)
    out = []
    for fn in (lambda a, b: F.rms_norm(a, (8,), b, 1e-6), lambda a, b: _RMSNorm.apply(a, b, 1e-6)):
        a, b = x.clone().requires_grad_(), w.clone().requires_grad_()
        yy = fn(a, b)
        yy.backward(up)
        out.append((yy.detach(), a.grad, b.grad))
    for ref, mine in zip(*out):
        assert torch.allclose(mine, ref, atol=1e-5, rtol=1e-5)
