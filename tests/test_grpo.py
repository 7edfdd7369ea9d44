"""Tests for r1lab.rl.grpo: hand-worked numbers, properties, and the vectorised loss vs a loop.

PPO's pieces (GAE, value loss), masked statistics, log-probs and entropy: tests/test_estimators.py."""

from __future__ import annotations

import itertools
import math
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r1lab.rl.grpo import group_advantages, kl_k1, kl_k2, kl_k3, policy_loss

T64 = torch.float64


def close(a, b, tol: float = 1e-6) -> None:
    torch.testing.assert_close(torch.as_tensor(a, dtype=T64), torch.as_tensor(b, dtype=T64), atol=tol, rtol=0)


# --- group_advantages ---

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_group_scale_hand_numbers():
    # group 1: [1,0,0,1], mean 0.5, deviations ±0.5; sample var = 4·0.25/3 = 1/3, std = 0.5773503
    # A = ±0.5 / (0.5773503 + 1e-4) = ±0.8658758.  group 2: all 1 -> 0 / (0 + 1e-4) = exactly 0.
    a = group_advantages(REWARDS, group_size=4)
    s = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    close(a[:4], [s, -s, -s, s])
    close(s, 0.8658758, 1e-6)
    assert torch.equal(a[4:], torch.zeros(4))


def test_batch_scale_hand_numbers():
    # batch mean 0.75: deviations 6 × 0.25 and 2 × −0.75 -> Σ sq = 0.375 + 1.125 = 1.5
    # sample var = 1.5 / 7, std = 0.4629100; A = ±0.5 / (0.4629100 + 1e-4) = ±1.0798
    a = group_advantages(REWARDS, group_size=4, scale="batch")
    s = 0.5 / (math.sqrt(1.5 / 7) + 1e-4)
    close(a, [s, -s, -s, s, 0, 0, 0, 0])
    close(s, 1.0798, 1e-4)


def test_none_scale_is_centring_only():
    # Dr. GRPO: r − group mean = ±0.5 and 0
    a = group_advantages(REWARDS, group_size=4, scale="none")
    close(a, [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])


def test_group_of_two_uses_sample_std():
    # [1, 0]: mean 0.5, sample std = sqrt((0.25 + 0.25) / 1) = 0.7071068 (population std would be 0.5)
    a = group_advantages(torch.tensor([1, 0]), group_size=2)  # int rewards are accepted
    s = 0.5 / (math.sqrt(0.5) + 1e-4)
    close(a, [s, -s])
    assert a.dtype == torch.float32


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="not divisible by group_size=4"):
        group_advantages(torch.zeros(6), group_size=4)
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(torch.zeros(4), group_size=1)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.zeros(4), group_size=2, scale="std")
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 2), group_size=2)


# --- policy_loss: hand-worked 2×3 examples ---

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def _leaf(x) -> torch.Tensor:
    return torch.tensor(x, dtype=T64, requires_grad=True)


@pytest.mark.parametrize(
    ("norm", "max_len", "value", "denominators"),
    [
        # per-token loss −A: row 1 [−1, −1, −1], row 2 [0.5, 0.5, ·]
        # sequence: (mean(−1,−1,−1) + mean(0.5,0.5)) / 2 = (−1 + 0.5)/2 = −0.25; grad −A/(|o_i|·N)
        ("sequence", None, -0.25, [[6, 6, 6], [4, 4, 1]]),
        # token: (−3 + 1) / 5 tokens = −0.4; grad −A/5
        ("token", None, -0.4, [[5, 5, 5], [5, 5, 1]]),
        # constant: (−3 + 1) / (2·4) = −0.25; grad −A/8
        ("constant", 4, -0.25, [[8, 8, 8], [8, 8, 1]]),
        # constant without max_len uses T = 3: −2 / 6
        ("constant", None, -1 / 3, [[6, 6, 6], [6, 6, 1]]),
    ],
)
def test_ratio_one_is_plain_policy_gradient(norm, max_len, value, denominators):
    logp = _leaf([[-1.0, -2.0, -0.5], [-0.3, -1.2, -7.0]])
    adv = torch.tensor([1.0, -0.5], dtype=T64)
    loss, stats = policy_loss(logp, logp.detach().clone(), adv, MASK, norm=norm, max_len=max_len)
    loss.backward()
    close(loss, value)
    close(stats["loss"], value)
    a = adv[:, None].expand(2, 3)
    close(logp.grad, -a * MASK / torch.tensor(denominators, dtype=T64))
    assert stats["clip_frac"] == 0 and stats["ratio_mean"] == 1 and stats["kl"] == 0


# ratios row 1 [1, 1.5, 0.5] with A = +1; row 2 [0.5, 1.5, (masked)] with A = −1; eps 0.2 -> [0.8, 1.2]
RATIOS = [[1.0, 1.5, 0.5], [0.5, 1.5, 1.0]]


def _clip_example():
    old = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -7.0]], dtype=T64)
    logp = (old + torch.tensor(RATIOS, dtype=T64).log()).requires_grad_(True)
    return logp, old, torch.tensor([1.0, -1.0], dtype=T64)


@pytest.mark.parametrize(
    ("norm", "value", "grad_scale"),
    [
        # per-token loss: row 1: −min(ρ, clip ρ)·1 = −[1, 1.2, 0.5] (sum −2.7)
        #                 row 2: −min(−ρ, −clip ρ) = −[min(−0.5,−0.8), min(−1.5,−1.2)] = [0.8, 1.5] (sum 2.3)
        ("sequence", (-2.7 / 3 + 2.3 / 2) / 2, [[6, 6, 6], [4, 4, 4]]),  # (−0.9 + 1.15)/2 = 0.125
        ("token", (-2.7 + 2.3) / 5, [[5, 5, 5], [5, 5, 5]]),  # −0.08
        ("constant", (-2.7 + 2.3) / 8, [[8, 8, 8], [8, 8, 8]]),  # max_len 4: −0.05
    ],
)
def test_clipped_surrogate_hand_numbers(norm, value, grad_scale):
    logp, old, adv = _clip_example()
    loss, stats = policy_loss(logp, old, adv, MASK, norm=norm, max_len=4)
    loss.backward()
    close(loss, value)
    # d(−ρA)/dlogp = −ρA where the unclipped branch is the min, 0 where the clip is active:
    # row 1: ρ=1 -> −1; ρ=1.5 clipped -> 0; ρ=0.5 (0.5 < 0.8, unclipped is the min) -> −0.5
    # row 2: ρ=0.5, A<0 clipped at 0.8 -> 0; ρ=1.5, A<0 (−1.5 < −1.2, unclipped) -> +1.5; masked -> 0
    raw = torch.tensor([[-1.0, 0.0, -0.5], [0.0, 1.5, 0.0]], dtype=T64)
    close(logp.grad, raw / torch.tensor(grad_scale, dtype=T64))
    # clip active: low = (ρ<0.8, A<0) 1 token; high = (ρ>1.2, A>0) 1 token; of 5
    close(stats["clip_low"], 0.2)
    close(stats["clip_high"], 0.2)
    close(stats["clip_frac"], 0.4)
    close(stats["ratio_mean"], (1 + 1.5 + 0.5 + 0.5 + 1.5) / 5)
    close(stats["ratio_min"], 0.5)
    close(stats["ratio_max"], 1.5)
    assert stats["tokens"] == 5


def test_clip_ratio_above_range_has_zero_gradient():
    # ρ = 1.5, A = 2, eps 0.2: surrogate min(3.0, 1.2·2 = 2.4) = 2.4, loss −2.4, gradient 0
    logp = _leaf([[math.log(1.5)]])
    loss, _ = policy_loss(
        logp, torch.zeros(1, 1, dtype=T64), torch.tensor([2.0], dtype=T64), torch.ones(1, 1)
    )
    loss.backward()
    close(loss, -2.4)
    assert logp.grad.item() == 0.0


def test_clip_higher():
    # eps_low 0.2, eps_high 0.28, A = +1: ρ 1.25 is inside [0.8, 1.28] (clipped at 1.2 without
    # clip-higher), ρ 1.5 -> 1.28. Row loss = −(1.25 + 1.28)/2 = −1.265; grads −1.25/2 and 0.
    logp = torch.tensor([[1.25, 1.5]], dtype=T64).log().requires_grad_(True)
    old, adv, mask = torch.zeros(1, 2, dtype=T64), torch.tensor([1.0], dtype=T64), torch.ones(1, 2)
    loss, stats = policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    loss.backward()
    close(loss, -1.265)
    close(logp.grad, [[-0.625, 0.0]])
    close(stats["clip_high"], 0.5)
    # symmetric eps 0.2: −(1.2 + 1.2)/2 = −1.2
    close(policy_loss(logp, old, adv, mask)[0], -1.2)
    # the low side keeps eps_low: ρ 0.75, A = −1 -> −min(−0.75, −0.8) = 0.8 (clipped)
    low = torch.tensor([[0.75]], dtype=T64).log()
    close(policy_loss(low, old[:, :1], -adv, mask[:, :1], eps_high=0.28)[0], 0.8)


def test_kl_term_hand_numbers():
    # π = 0.5, π_ref = 0.25: k3 = 0.5 − log 0.5 − 1 = 0.1931472; A = 0, β = 0.1 -> loss 0.01931472
    # dk3/dlogp = 1 − π_ref/π = 0.5 -> grad β·0.5 / (1 token · 1 seq) = 0.05
    logp = _leaf([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]], dtype=T64)
    loss, stats = policy_loss(
        logp, logp.detach(), torch.zeros(1, dtype=T64), torch.ones(1, 1), ref_logp=ref, beta=0.1
    )
    loss.backward()
    close(stats["kl"], 0.5 - math.log(0.5) - 1)
    close(loss, 0.1 * 0.1931472, 1e-7)
    close(logp.grad, [[0.05]])


def test_kl_estimators_hand_numbers():
    lp, ref = torch.tensor(math.log(0.5), dtype=T64), torch.tensor(math.log(0.25), dtype=T64)
    close(kl_k1(lp, ref), math.log(2))  # log 0.5 − log 0.25
    close(kl_k2(lp, ref), 0.5 * math.log(2) ** 2)
    close(kl_k3(lp, ref), 0.5 + math.log(2) - 1)
    x = torch.randn(5)
    assert torch.equal(kl_k3(x, x), torch.zeros(5))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-60, 0, width=32), min_size=1, max_size=8),
    st.lists(st.floats(-60, 0, width=32), min_size=1, max_size=8),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_k3_is_non_negative(a, b, dtype):
    n = min(len(a), len(b))
    lp, ref = torch.tensor(a[:n], dtype=dtype), torch.tensor(b[:n], dtype=dtype)
    assert (kl_k3(lp, ref) >= 0).all()


# --- GSPO ---


def test_gspo_sequence_ratio_hand_numbers():
    # row 1: log ratios [0.1, 0.2, 0.3] -> s = exp(0.2) = 1.2214028, A = +1
    # row 2: log ratios [−0.1, 0.1, masked] -> s = exp(0) = 1, A = −1
    old = torch.zeros(2, 3, dtype=T64)
    logp = _leaf([[0.1, 0.2, 0.3], [-0.1, 0.1, 99.0]])
    adv = torch.tensor([1.0, -1.0], dtype=T64)
    s = math.exp(0.2)
    # eps_high 0.3: nothing clipped. loss = (−s + 1)/2 = −0.1107014
    loss, stats = policy_loss(logp, old, adv, MASK, eps_high=0.3, level="sequence")
    loss.backward()
    close(loss, (1 - s) / 2)
    # each token's ρ has ∂ρ/∂logp_t = s: row 1 grad −s/(3·2) = −0.2035671, row 2 +1/(2·2)
    close(logp.grad, [[-s / 6] * 3, [0.25, 0.25, 0.0]])
    close(stats["ratio_max"], s)
    # GSPO's eps (3e-4, 4e-4): row 1 (s = 1.22, A > 0) is clipped as a whole, row 2 (s = 1) is
    # not, although its first token alone (ρ = 0.905, A < 0) would be clipped at token level.
    logp.grad = None
    policy_loss(logp, old, adv, MASK, eps_low=3e-4, eps_high=4e-4, level="sequence")[0].backward()
    close(logp.grad, [[0.0] * 3, [0.25, 0.25, 0.0]])
    logp.grad = None
    policy_loss(logp, old, adv, MASK, eps_low=3e-4, eps_high=4e-4, level="token")[0].backward()
    close(logp.grad, [[0.0] * 3, [0.0, math.exp(0.1) / 4, 0.0]])


def test_gspo_gradient_matches_sequence_objective():
    # with (N,) advantages and the sequence norm, GSPO-token has GSPO's gradient:
    # J = 1/N Σ_i min(s_i A_i, clip(s_i) A_i), s_i = exp(mean_t log ρ_{i,t}) differentiated directly
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(4, 5, generator=g, dtype=T64)).requires_grad_(True)
    old = logp.detach() + 0.1 * torch.randn(4, 5, generator=g, dtype=T64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
    adv = torch.randn(4, generator=g, dtype=T64)
    loss, _ = policy_loss(logp, old, adv, mask, eps_low=0.05, level="sequence")
    (grad,) = torch.autograd.grad(loss, logp)
    m = mask.bool()
    s = torch.exp(torch.where(m, logp - old, 0.0).sum(1) / m.sum(1))
    direct = -torch.minimum(s * adv, s.clamp(0.95, 1.05) * adv).mean()
    (want,) = torch.autograd.grad(direct, logp)
    close(loss, direct, 1e-12)
    close(grad, want, 1e-12)


# --- Masking, degenerate inputs, (N, T) advantages ---


@pytest.mark.parametrize(
    ("norm", "level"), list(itertools.product(["sequence", "token", "constant"], ["token", "sequence"]))
)
def test_masked_positions_contribute_nothing(norm, level):
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    base = [-torch.rand(3, 4, generator=g, dtype=T64) for _ in range(3)]
    adv = torch.randn(3, 4, generator=g, dtype=T64)
    results = []
    for garbage in (None, float("nan"), float("inf"), 1e30):
        lp, old, ref = (x.clone() for x in base)
        a = adv.clone()
        if garbage is not None:
            for x in (lp, old, ref, a):
                x[~mask] = garbage
        lp.requires_grad_(True)
        loss, stats = policy_loss(lp, old, a, mask, ref_logp=ref, beta=0.04, norm=norm, level=level)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
        assert (lp.grad[~mask] == 0).all()
        results.append((loss.detach(), lp.grad, stats))
    for loss, grad, stats in results[1:]:
        close(loss, results[0][0], 0)
        close(grad, results[0][1], 0)
        assert stats == results[0][2]


def test_empty_batch_and_empty_sequence_are_finite():
    lp = torch.zeros(2, 3, requires_grad=True)
    for norm in ("sequence", "token", "constant"):
        loss, stats = policy_loss(lp, lp.detach(), torch.ones(2), torch.zeros(2, 3), norm=norm)
        assert loss.item() == 0 and all(math.isfinite(v) for v in stats.values())
    # sequence norm: the empty row counts in N (adds 0): (−1 + 0)/2
    loss, _ = policy_loss(lp, lp.detach(), torch.ones(2), torch.tensor([[1, 1, 1], [0, 0, 0]]))
    close(loss, -0.5)


def test_token_level_advantages():
    # PPO: A per token. ρ = 1, A row 1 [1, 2, 3], row 2 [−1, 1, (masked 5)]; token norm:
    # loss = −(1 + 2 + 3 − 1 + 1)/5 = −1.2
    lp = torch.zeros(2, 3, dtype=T64, requires_grad=True)
    adv = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 1.0, 5.0]], dtype=T64)
    loss, _ = policy_loss(lp, lp.detach(), adv, MASK, norm="token")
    loss.backward()
    close(loss, -1.2)
    close(lp.grad, -adv * MASK / 5)


def test_token_weight_scales_the_surrogate_not_the_kl():
    # the clip example (token norm, loss −0.08 from per-token −[1, 1.2, 0.5] and [0.8, 1.5]) with
    # truncated-IS weights w = [[2, 1, 0.5], [1, 0.5, (masked 9)]]:
    # −(2·1 + 1.2 + 0.5·0.5) + (0.8 + 0.5·1.5) = −3.45 + 1.55 = −1.9, over 5 tokens: −0.38
    logp, old, adv = _clip_example()
    w = torch.tensor([[2.0, 1.0, 0.5], [1.0, 0.5, 9.0]], dtype=T64)
    loss, _ = policy_loss(logp, old, adv, MASK, norm="token", token_weight=w)
    loss.backward()
    close(loss, -0.38)
    raw = torch.tensor([[-1.0, 0.0, -0.5], [0.0, 1.5, 0.0]], dtype=T64)  # the unweighted gradient × 5
    close(logp.grad, raw * w * MASK / 5)
    # with β > 0 and ρ = 1 (old = ref = logp): the weight does not touch the k3 term (which is 0 here)
    lp = torch.zeros(1, 2, dtype=T64, requires_grad=True)
    ref = torch.log(torch.tensor([[0.5, 2.0]], dtype=T64))
    loss_w, _ = policy_loss(lp, lp.detach(), torch.zeros(1, dtype=T64), torch.ones(1, 2), ref_logp=ref, beta=1.0,
                            norm="token", token_weight=torch.full((1, 2), 3.0, dtype=T64))
    loss_1, _ = policy_loss(lp, lp.detach(), torch.zeros(1, dtype=T64), torch.ones(1, 2), ref_logp=ref, beta=1.0,
                            norm="token")
    # k3 per token: 0.5 − log 0.5 − 1 = 0.1931 and 2 − log 2 − 1 = 0.3069, mean 0.25, with or without w
    close(loss_1, 0.25)
    close(loss_w, 0.25)


def test_policy_loss_argument_errors():
    lp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="norm"):
        policy_loss(lp, lp, torch.zeros(2), lp, norm="mean")
    with pytest.raises(ValueError, match="level"):
        policy_loss(lp, lp, torch.zeros(2), lp, level="seq")
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(lp, lp, torch.zeros(3), lp)
    with pytest.raises(ValueError, match="mask"):
        policy_loss(lp, lp, torch.zeros(2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(lp, lp, torch.zeros(2), lp, beta=0.1)


# --- Fast vs reference: a plain loop over sequences and tokens ---


def reference_policy_loss(logp, old, adv, mask, ref, beta, eps_low, eps_high, norm, max_len, level):
    """Loop version of policy_loss; returns (loss, clip_low count, clip_high count)."""
    n, t_len = logp.shape
    eps_high = eps_low if eps_high is None else eps_high
    rows, total, total_tokens, low, high = [], 0.0, 0, 0, 0
    for i in range(n):
        toks = [t for t in range(t_len) if mask[i, t]]
        if level == "sequence" and toks:
            s_i = math.exp(sum((logp[i, t] - old[i, t]).item() for t in toks) / len(toks))
        row = 0.0
        for t in toks:
            a = adv[i] if adv.dim() == 1 else adv[i, t]
            if level == "token":
                rho = torch.exp(logp[i, t] - old[i, t])
            else:  # GSPO-token: value s_i, d rho / d logp = s_i
                rho = s_i * torch.exp(logp[i, t] - logp[i, t].detach())
            clipped = min(max(rho.item(), 1 - eps_low), 1 + eps_high)
            low += rho.item() < 1 - eps_low and a.item() < 0
            high += rho.item() > 1 + eps_high and a.item() > 0
            # the min picks the unclipped term (with its gradient) unless the clipped one is smaller
            term = -rho * a if (rho * a).item() <= clipped * a.item() else -clipped * a
            d = ref[i, t] - logp[i, t]
            row = row + term + beta * (torch.exp(d) - d - 1)
        rows.append(row / max(len(toks), 1))
        total, total_tokens = total + row, total_tokens + len(toks)
    if norm == "sequence":
        loss = sum(rows) / n
    elif norm == "token":
        loss = total / max(total_tokens, 1)
    else:
        loss = total / (n * (max_len or t_len))
    return loss, low, high


MODES = list(itertools.product(["sequence", "token", "constant"], ["token", "sequence"], [1, 2], [0, 0.05]))


@pytest.mark.parametrize(("norm", "level", "adv_dims", "beta"), MODES)
@pytest.mark.parametrize("eps_high", [None, 0.28])
def test_vectorised_matches_loop(norm, level, adv_dims, beta, eps_high):
    g = torch.Generator().manual_seed(zlib.crc32(repr((norm, level, adv_dims, beta, eps_high)).encode()))
    n, t_len = 5, 6
    logp = (-2 * torch.rand(n, t_len, generator=g, dtype=T64)).requires_grad_(True)
    old, ref = (logp.detach() + 0.3 * torch.randn(n, t_len, generator=g, dtype=T64) for _ in range(2))
    mask = torch.arange(t_len)[None, :] < torch.randint(0, t_len + 1, (n,), generator=g)[:, None]
    adv = torch.randn((n, t_len)[:adv_dims], generator=g, dtype=T64)
    kw = dict(eps_low=0.2, eps_high=eps_high, norm=norm, max_len=8 if norm == "constant" else None)
    loss, stats = policy_loss(logp, old, adv, mask, ref_logp=ref, beta=beta, level=level, **kw)
    (grad,) = torch.autograd.grad(loss, logp)
    want, low, high = reference_policy_loss(logp, old, adv, mask, ref, beta, level=level, **kw)
    has_grad = torch.is_tensor(want) and want.requires_grad
    want_grad = torch.autograd.grad(want, logp)[0] if has_grad else torch.zeros_like(grad)
    close(loss, want, 1e-10)
    close(grad, want_grad, 1e-10)
    tokens = max(int(mask.sum()), 1)
    close([stats["clip_low"], stats["clip_high"]], [low / tokens, high / tokens], 1e-6)
