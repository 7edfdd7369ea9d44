"""PPO's pieces (GAE, the clipped value loss), masked statistics, token log-probs and entropy:
hand-worked numbers and fast paths against plain references."""

from __future__ import annotations

import math

import pytest
import torch

from r1lab.rl.grpo import distill_advantages, gae, masked_mean, masked_whiten, value_loss
from r1lab.train.logprobs import entropy_from_logits, token_logprobs, token_logprobs_chunked
from tests.test_grpo import MASK, T64, _leaf, close

# --- PPO pieces: GAE, value loss, masked statistics ---


def test_gae_hand_numbers():
    # γ 0.9, λ 0.95 (γλ = 0.855); row 1: r [0, 0, 1], V [0.5, 0.6, 0.7]
    #   t2: δ = 1 − 0.7 = 0.3                  A2 = 0.3
    #   t1: δ = 0.9·0.7 − 0.6 = 0.03           A1 = 0.03 + 0.855·0.3 = 0.2865
    #   t0: δ = 0.9·0.6 − 0.5 = 0.04           A0 = 0.04 + 0.855·0.2865 = 0.2849575
    # row 2: r [0, 1, pad], V [0.2, 0.4, garbage], mask [1, 1, 0]
    #   t1: δ = 1 − 0.4 = 0.6 (nothing after the last masked token)   A1 = 0.6
    #   t0: δ = 0.9·0.4 − 0.2 = 0.16           A0 = 0.16 + 0.855·0.6 = 0.673
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 7.0]], dtype=T64)
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, 0.4, float("nan")]], dtype=T64)
    adv, ret = gae(rewards, values, MASK, gamma=0.9, lam=0.95)
    close(adv, [[0.2849575, 0.2865, 0.3], [0.673, 0.6, 0.0]], 1e-12)
    close(ret, [[0.7849575, 0.8865, 1.0], [0.873, 1.0, 0.0]], 1e-12)


def test_gae_gamma_lambda_one_is_reward_to_go_minus_value():
    g = torch.Generator().manual_seed(2)
    rewards, values = torch.randn(4, 7, generator=g, dtype=T64), torch.randn(4, 7, generator=g, dtype=T64)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 4, 1, 0])[:, None]
    adv, ret = gae(rewards, values, mask)
    to_go = (rewards * mask).flip(1).cumsum(1).flip(1)
    close(adv, (to_go - values) * mask, 1e-12)
    close(ret, to_go * mask, 1e-12)


def test_gae_skips_masked_positions_inside_a_sequence():
    # a masked token in the middle (e.g. tool output) is transparent: same as removing it
    rewards, values = torch.tensor([[0.0, 5.0, 1.0]]), torch.tensor([[0.5, 9.0, 0.7]])
    adv, _ = gae(rewards, values, torch.tensor([[1, 0, 1]]), gamma=0.9, lam=0.95)
    want, _ = gae(rewards[:, [0, 2]], values[:, [0, 2]], torch.ones(1, 2), gamma=0.9, lam=0.95)
    close(adv[:, [0, 2]], want)
    assert adv[0, 1] == 0


def test_distill_advantages_hand_numbers():
    # r = log π_T − log π_old: row 1 [−0.5, 0.2, −0.1], row 2 [0.4, −0.3, pad]
    t_lp = torch.tensor([[-1.0, -0.3, -0.6], [-0.2, -1.3, 9.0]], dtype=T64)
    o_lp = torch.tensor([[-0.5, -0.5, -0.5], [-0.6, -1.0, 0.0]], dtype=T64)
    close(distill_advantages(t_lp, o_lp, MASK), [[-0.5, 0.2, -0.1], [0.4, -0.3, 0.0]], 1e-12)  # γ = 0: own token
    # γ = 0.5: row 1 t2 −0.1, t1 0.2 + 0.5·(−0.1) = 0.15, t0 −0.5 + 0.5·0.15 = −0.425; row 2 t1 −0.3, t0 0.25
    close(distill_advantages(t_lp, o_lp, MASK, discount=0.5), [[-0.425, 0.15, -0.1], [0.25, -0.3, 0.0]], 1e-12)
    # γ = 1: the reverse KL to go; plus w = 0.5 × sequence advantages [1, −2] on every unmasked token
    adv = distill_advantages(t_lp, o_lp, MASK, discount=1.0, seq_adv=torch.tensor([1.0, -2.0]), reward_weight=0.5)
    close(adv, [[-0.4 + 0.5, 0.1 + 0.5, -0.1 + 0.5], [0.1 - 1.0, -0.3 - 1.0, 0.0]], 1e-12)
    with pytest.raises(ValueError, match="seq_adv"):
        distill_advantages(t_lp, o_lp, MASK, reward_weight=1.0)


def test_value_loss_clipping_hand_numbers():
    # token 0: V 1.0, V_old 0.5, R 2: (V−R)² = 1; V_clip = 0.5 + 0.2 = 0.7, (0.7−2)² = 1.69 -> 1.69
    #          (clipped term larger: gradient 0)
    # token 1: V −0.5, V_old 0.1, R 0.3: (−0.8)² = 0.64; V_clip = 0.1 − 0.2 = −0.1, (−0.4)² = 0.16 -> 0.64
    #          gradient ½·2·(V−R)/2 tokens = −0.4
    # token 2: masked.  loss = ½·(1.69 + 0.64)/2 = 0.5825
    values = _leaf([[1.0, -0.5, 3.0]])
    old = torch.tensor([[0.5, 0.1, 0.0]], dtype=T64)
    ret = torch.tensor([[2.0, 0.3, 0.0]], dtype=T64)
    loss, stats = value_loss(values, old, ret, torch.tensor([[1, 1, 0]]), clip=0.2)
    loss.backward()
    close(loss, 0.5825, 1e-12)
    close(values.grad, [[0.0, -0.4, 0.0]], 1e-12)
    close(stats["value_clip_frac"], 0.5)
    # unclipped: ½·(1 + 0.64)/2 = 0.41
    close(value_loss(values, old, ret, torch.tensor([[1, 1, 0]]), clip=None)[0], 0.41, 1e-12)


def test_masked_mean_and_whiten():
    x = torch.tensor([[1.0, 2.0, float("nan")], [3.0, float("inf"), 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    close(masked_mean(x, mask), 2.0)  # (1 + 2 + 3) / 3
    close(masked_mean(x, mask, dim=1), [1.5, 3.0])
    close(masked_mean(x, torch.zeros_like(mask)), 0.0)
    # mean 2, sample var ((−1)² + 0 + 1²)/2 = 1 -> [−1, 0, 1]; masked -> 0
    w = masked_whiten(x, mask)
    close(w, [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], 1e-6)
    close(masked_whiten(x, mask, shift_mean=False), [[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]], 1e-6)


# --- Log-probs and entropy ---


def test_token_logprobs_hand_numbers():
    # logits [0, log 3] -> probs [1/4, 3/4]
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, math.log(3)]]])
    got = token_logprobs(logits, torch.tensor([[1, 0]]))
    close(got, [[math.log(0.75), math.log(0.25)]])
    close(token_logprobs_chunked(logits, torch.tensor([[1, 0]])), got)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_logprobs_match_plain(dtype):
    g = torch.Generator().manual_seed(3)
    logits = (4 * torch.randn(5, 7, 50, generator=g)).to(dtype).requires_grad_(True)
    tokens = torch.randint(0, 50, (5, 7), generator=g)
    plain = token_logprobs(logits, tokens)
    (g1,) = torch.autograd.grad(plain.sum(), logits)
    for chunk in (1, 2, 5, 8):
        fast = token_logprobs_chunked(logits, tokens, chunk_size=chunk)
        (g2,) = torch.autograd.grad(fast.sum(), logits)
        assert fast.dtype == torch.float32
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
        torch.testing.assert_close(g2, g1)


def test_entropy_from_logits():
    # uniform over 4 -> log 4; probs [1/4, 3/4] -> −(¼ log ¼ + ¾ log ¾) = 0.5623351; masked vocab -> 0
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3), -math.inf, -math.inf]]])
    logits = torch.cat([logits, torch.tensor([[[5.0, -math.inf, -math.inf, -math.inf]] * 2])])
    h = entropy_from_logits(logits)
    close(h, [[math.log(4), 0.5623351], [0.0, 0.0]], 1e-6)
    g = torch.Generator().manual_seed(4)
    z = 10 * torch.randn(3, 4, 30, generator=g)
    want = torch.distributions.Categorical(logits=z).entropy()
    torch.testing.assert_close(entropy_from_logits(z), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy_from_logits(z, chunk_size=2), want, atol=1e-5, rtol=0)
