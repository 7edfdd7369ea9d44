"""The three learning stages of ``r1lab drive``: JEPA pretraining of the scene encoder,
behaviour cloning of IDM/MOBIL, and the GRPO / PPO update on driving rollouts.

1. **JEPA** (I-JEPA / V-JEPA's objective on scene features instead of pixels): from the
   embedding of the scene at decision t, predict the target encoder's embedding of the scene at
   t + k (k = 1..k_max decisions, k embedded), with the target encoder an EMA of the online one
   and no gradient through it:

       L_ssl = ‖ g(f_θ(x_t), k) − sg(f_ξ(x_{t+k})) ‖²,    ξ ← m ξ + (1 − m) θ

2. **Behaviour cloning**: cross-entropy on the anchor nearest to where IDM/MOBIL drove
   (``Episode.expert_samples``), invalid anchors masked.
3. **GRPO** (the same ``rl.grpo.policy_loss`` as the language models): an episode is a
   completion, a decision a token. Advantages per episode:
   ``--grouping state`` (default): over the G rollouts from the same start (``group_advantages``);
   ``--grouping category``: over all episodes of the same scenario category in the batch (the
   seed's design, which mixes scene difficulty into the advantage);
   ``scale = "none"`` gives the fixed-scale r − mean (Dr. GRPO).
   PPO (``algo = "ppo"``): A_t = R − V_old(s_t) whitened (GAE with γ = λ = 1 and the reward at the
   last decision, ``rl.grpo.gae``), plus the clipped value loss.
   The routing chosen during the rollout is reused in every inner epoch (old and new log-probs
   route alike), and the V3 bias moves after each optimizer step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from r1lab.driving.policy import INPUTS, DriverPolicy, collate, log_probs
from r1lab.driving.rollout import Rollout
from r1lab.rl.grpo import gae, group_advantages, masked_whiten, policy_loss, value_loss


# ---------------------------------------------------------------------------------------------
# 1. JEPA
# ---------------------------------------------------------------------------------------------
class Predictor(nn.Module):
    def __init__(self, dim: int, k_max: int):
        super().__init__()
        self.k = nn.Embedding(k_max + 1, dim)
        self.net = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, h: Tensor, k: Tensor) -> Tensor:
        return self.net(h + self.k(k))


def jepa_pairs(episodes: list[list[dict]], k_max: int) -> tuple[list[dict], list[dict], list[int]]:
    """(x_t, x_{t+k}, k) for every t and k ≤ k_max within each logged episode."""
    src, dst, ks = [], [], []
    for obs in episodes:
        for t in range(len(obs)):
            for k in range(1, k_max + 1):
                if t + k < len(obs):
                    src.append(obs[t])
                    dst.append(obs[t + k])
                    ks.append(k)
    return src, dst, ks


def ssl_fit(policy: DriverPolicy, episodes: list[list[dict]], *, steps: int, batch: int = 256,
            lr: float = 1e-3, k_max: int = 2, momentum: float = 0.99, seed: int = 0,
            progress: Any = None) -> list[dict[str, float]]:
    """Pretrain ``policy.encoder`` in place; returns per-step {loss, std} (std of the online
    embedding across the batch: a collapse shows as std → 0)."""
    src, dst, ks = jepa_pairs(episodes, k_max)
    if not src:
        raise ValueError("no JEPA pairs: the logged episodes are shorter than two decisions")
    xs, ys, kk = collate(src), collate(dst), torch.tensor(ks)
    online = policy.encoder
    target = copy.deepcopy(online).requires_grad_(False)
    pred = Predictor(policy.config.dim, k_max)
    opt = torch.optim.AdamW([*online.parameters(), *pred.parameters()], lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(steps):
        idx = torch.randint(len(kk), (min(batch, len(kk)),), generator=gen)
        h = online(xs["ego"][idx], xs["others"][idx], xs["present"][idx])
        with torch.no_grad():
            z = target(ys["ego"][idx], ys["others"][idx], ys["present"][idx])
        loss = F.mse_loss(pred(h, kk[idx]), z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p_t, p_o in zip(target.parameters(), online.parameters()):
                p_t.mul_(momentum).add_(p_o.detach(), alpha=1 - momentum)
        history.append({"loss": loss.item(), "std": float(h.detach().std(0).mean())})
        if progress is not None:
            progress(history[-1])
    return history


# ---------------------------------------------------------------------------------------------
# 2. Behaviour cloning
# ---------------------------------------------------------------------------------------------
def bc_fit(policy: DriverPolicy, samples: list[tuple[dict, int, float]], held_out: list[tuple[dict, int, float]],
           *, epochs: int, batch: int = 256, lr: float = 1e-3, seed: int = 0, bias_gamma: float = 1e-3,
           progress: Any = None) -> list[dict[str, float]]:
    """Cross-entropy on expert anchors; returns per-epoch {loss, acc, held_out_acc}."""
    x, y = collate([s[0] for s in samples]), torch.tensor([s[1] for s in samples])
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(epochs):
        policy.train()
        order = torch.randperm(len(y), generator=gen)
        losses, hits = [], 0
        for i in range(0, len(y), batch):
            idx = order[i:i + batch]
            out = policy(**{k: x[k][idx] for k in INPUTS})
            loss = F.cross_entropy(out["logits"], y[idx]) + out["aux"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            policy.update_bias(bias_gamma)
            losses.append(loss.item())
            hits += int((out["logits"].argmax(-1) == y[idx]).sum())
        history.append({"loss": float(np.mean(losses)), "acc": hits / len(y),
                        "held_out_acc": bc_accuracy(policy, held_out)})
        if progress is not None:
            progress(history[-1])
    return history


@torch.no_grad()
def bc_accuracy(policy: DriverPolicy, samples: list[tuple[dict, int, float]]) -> float:
    if not samples:
        return math.nan
    was = policy.training
    policy.eval()
    out = policy(**collate([s[0] for s in samples]))
    policy.train(was)
    return float((out["logits"].argmax(-1) == torch.tensor([s[1] for s in samples])).float().mean())


# ---------------------------------------------------------------------------------------------
# 3. GRPO / PPO
# ---------------------------------------------------------------------------------------------
def category_advantages(rewards: Tensor, categories: list[str], scale: str = "group", eps: float = 1e-4) -> Tensor:
    """A_i = (r_i − mean_c) / (std_c + eps) over the episodes of i's category c in the batch
    (``scale="none"``: r_i − mean_c). std is the unbiased one, as in ``group_advantages``."""
    out = torch.zeros_like(rewards)
    for c in set(categories):
        idx = torch.tensor([i for i, x in enumerate(categories) if x == c])
        r = rewards[idx]
        centred = r - r.mean()
        if scale == "none":
            out[idx] = centred
        else:
            std = r.std() if len(r) > 1 else torch.zeros(())
            out[idx] = centred / (std + eps)
    return out


@dataclass(frozen=True)
class UpdateSettings:
    algo: str = "grpo"  # grpo | ppo
    grouping: str = "state"  # state | category
    scale: str = "group"  # group | batch | none
    epochs: int = 2  # μ: passes over the rollout
    minibatches: int = 2
    eps_low: float = 0.2
    eps_high: float = 0.28
    temperature: float = 1.0
    bias_gamma: float = 1e-3
    grad_clip: float = 1.0
    value_coef: float = 0.5


def advantages(rollout: Rollout, group: int, s: UpdateSettings) -> Tensor:
    """Per-episode (N,) advantages for GRPO; per-decision (M,) for PPO."""
    if s.algo == "ppo":
        n, d = rollout.n_episodes, int(rollout.position.max()) + 1
        mask = torch.zeros(n, d, dtype=torch.bool)
        mask[rollout.episode, rollout.position] = True
        values = torch.zeros(n, d)
        values[rollout.episode, rollout.position] = rollout.values
        rewards = torch.zeros(n, d)
        last = mask.sum(1) - 1
        rewards[torch.arange(n), last.clamp(min=0)] = rollout.rewards
        adv, _ = gae(rewards, values, mask, gamma=1.0, lam=1.0)
        adv = masked_whiten(adv, mask)
        return adv[rollout.episode, rollout.position]
    if s.grouping == "category":
        return category_advantages(rollout.rewards, rollout.categories, s.scale)
    return group_advantages(rollout.rewards, group, s.scale)


class _Grid:
    """Scatter M decision values into the (episodes, decisions) matrix ``policy_loss`` takes, so the
    loss normalises per decision of the minibatch as it does per token for language models."""

    def __init__(self, episode: Tensor, position: Tensor):
        self.rows = torch.unique(episode, return_inverse=True)[1]
        self.position = position
        self.shape = (int(self.rows.max()) + 1, int(position.max()) + 1)

    def __call__(self, values: Tensor) -> Tensor:
        return torch.zeros(self.shape, dtype=values.dtype).index_put((self.rows, self.position), values)


def update(policy: DriverPolicy, opt: torch.optim.Optimizer, rollout: Rollout, group: int, s: UpdateSettings,
           generator: torch.Generator | None = None) -> dict[str, float]:
    """μ epochs × minibatches of episodes; routing fixed to the rollout's; bias after each step."""
    adv = advantages(rollout, group, s)
    n = rollout.n_episodes
    returns = rollout.rewards[rollout.episode]
    stats: list[dict[str, float]] = []
    policy.train()
    for _ in range(s.epochs):
        order = torch.randperm(n, generator=generator)
        for chunk in order.chunk(s.minibatches):
            rows = torch.isin(rollout.episode, chunk).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            out = policy(**{k: rollout.inputs[k][rows] for k in INPUTS},
                         experts=[e[rows] for e in rollout.experts] or None)
            logp = log_probs(out["logits"] / max(s.temperature, 1e-6), rollout.actions[rows])
            grid = _Grid(rollout.episode[rows], rollout.position[rows])
            mask = grid(torch.ones(len(rows), dtype=torch.bool))
            a = adv[rows] if s.algo == "ppo" else adv[rollout.episode[rows]]
            loss, st = policy_loss(grid(logp), grid(rollout.logp[rows]), grid(a), mask, eps_low=s.eps_low,
                                   eps_high=s.eps_high, norm="token")
            if s.algo == "ppo":
                v_loss, vst = value_loss(grid(out["value"]), grid(rollout.values[rows]), grid(returns[rows]), mask)
                loss = loss + s.value_coef * v_loss
                st["value_loss"] = vst["value_loss"]
            loss = loss + out["aux"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            st["grad_norm"] = float(nn.utils.clip_grad_norm_(policy.parameters(), s.grad_clip))
            opt.step()
            policy.update_bias(s.bias_gamma)
            st["aux_loss"] = float(out["aux"])
            stats.append(st)
    keys = stats[0].keys() if stats else []
    return {k: float(np.mean([x[k] for x in stats])) for k in keys}
