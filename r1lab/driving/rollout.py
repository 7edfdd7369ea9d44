"""Driving rollouts: G episodes from each start state, the policy deciding for every live
episode at once; IDM/MOBIL logs; held-out evaluation; expert-load statistics.

A decision is the driving analogue of a token: an episode of D ≤ duration decisions is one
"completion", scored once by ``reward.episode_reward``. ``collect`` returns the decisions
flattened (M rows) with their episode index and position, so the update can rebuild the
(N, D) log-prob matrix that ``rl.grpo.policy_loss`` takes.

Start states are (category, seed) pairs: training seeds are drawn from [0, 10^6), held-out ones
from [10^6, 2·10^6), so no held-out scene is ever trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from r1lab.driving.env import CATEGORIES
from r1lab.driving.policy import DriverPolicy, collate, log_probs
from r1lab.driving.pool import EpisodePool
from r1lab.driving.reward import DEFAULT_WEIGHTS, RewardWeights, episode_reward

HELD_OUT_SEED = 1_000_000


def train_starts(rng: np.random.Generator, n: int, categories: tuple[str, ...] = CATEGORIES) -> list[dict]:
    """n start states, categories in turn, seeds drawn from the training range."""
    return [{"category": categories[i % len(categories)], "seed": int(rng.integers(HELD_OUT_SEED))}
            for i in range(n)]


def held_out_starts(per_category: int, categories: tuple[str, ...] = CATEGORIES) -> list[dict]:
    return [{"category": c, "seed": HELD_OUT_SEED + i} for c in categories for i in range(per_category)]


@dataclass
class Rollout:
    """N episodes (G per start, consecutive), M decisions in all."""

    inputs: dict[str, Tensor]  # policy inputs, each (M, ...)
    episode: Tensor  # (M,) episode of each decision
    position: Tensor  # (M,) its index within the episode
    actions: Tensor  # (M,)
    logp: Tensor  # (M,) log π_old(a) at the sampling temperature
    values: Tensor  # (M,) V_old(s)
    entropy: Tensor  # (M,) entropy of the sampling distribution (nats)
    experts: list[Tensor]  # per MoE layer (M, K): the routing the update reuses
    rewards: Tensor  # (N,)
    components: list[dict[str, float]]  # per episode
    categories: list[str]  # per episode
    traces: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_episodes(self) -> int:
        return len(self.rewards)

    def decisions(self) -> int:
        return len(self.actions)


@torch.no_grad()
def collect(policy: DriverPolicy, pool: EpisodePool, starts: list[dict], group: int, *, duration: float,
            temperature: float = 1.0, greedy: bool = False, generator: torch.Generator | None = None,
            weights: RewardWeights = DEFAULT_WEIGHTS, render: bool = False) -> Rollout:
    """Run ``group`` episodes from each start until all are done; score them."""
    was_training = policy.training
    policy.eval()
    specs = [{**s, "duration": duration, "render": render} for s in starts for _ in range(group)]
    obs = pool.reset(specs)
    live = {slot: o for slot, o in obs.items() if o is not None}
    rows: dict[str, list] = {k: [] for k in ("obs", "episode", "position", "action", "logp", "value", "entropy")}
    experts: list[list[Tensor]] = []
    step = 0
    while live:
        slots = sorted(live)
        out = policy(**collate([live[s] for s in slots]))
        logits = out["logits"] / max(temperature, 1e-6)
        if greedy:
            actions = logits.argmax(-1)
        else:
            actions = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)
        rows["obs"] += [live[s] for s in slots]
        rows["episode"] += slots
        rows["position"] += [step] * len(slots)
        rows["action"].append(actions)
        rows["logp"].append(log_probs(logits, actions))
        rows["value"].append(out["value"])
        logp_all = torch.log_softmax(logits, -1)
        rows["entropy"].append(-(logp_all.exp() * logp_all.nan_to_num(neginf=0.0)).sum(-1))
        if not experts:
            experts = [[] for _ in out["experts"]]
        for layer, e in zip(experts, out["experts"]):
            layer.append(e)
        result = pool.decide({s: int(a) for s, a in zip(slots, actions.tolist())})
        live = {s: o for s, (o, done) in result.items() if not done and o is not None}
        step += 1
    policy.train(was_training)
    traces = pool.summary(list(range(len(specs))))
    scored = [episode_reward(traces[i], weights) for i in range(len(specs))]
    cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0)  # noqa: E731
    return Rollout(
        inputs=collate(rows["obs"]) if rows["obs"] else {},
        episode=torch.tensor(rows["episode"], dtype=torch.long),
        position=torch.tensor(rows["position"], dtype=torch.long),
        actions=cat(rows["action"]).long(), logp=cat(rows["logp"]), values=cat(rows["value"]),
        entropy=cat(rows["entropy"]),
        experts=[torch.cat(layer) for layer in experts],
        rewards=torch.tensor([r for r, _ in scored], dtype=torch.float32),
        components=[c for _, c in scored], categories=[s["category"] for s in specs],
        traces=[traces[i] for i in range(len(specs))],
    )


def expert_logs(pool: EpisodePool, starts: list[dict], duration: float, weights: RewardWeights = DEFAULT_WEIGHTS,
                progress: Any = None, chunk: int = 8) -> tuple[list[list[tuple]], list[dict[str, float]]]:
    """IDM/MOBIL episodes: per episode its labelled decisions [(obs, anchor, error)], and the
    reward components of its drive (the baseline row of the report). ``progress(n)`` is called
    after every ``chunk`` episodes."""
    logs, comps = [], []
    for lo in range(0, len(starts), chunk):
        part = starts[lo:lo + chunk]
        out = pool.expert([{**s, "duration": duration} for s in part])
        for i, start in enumerate(part):
            samples, trace = out[i]
            logs.append(samples)
            reward, c = episode_reward(trace, weights)
            comps.append({**c, "reward": reward, "category": start["category"]})
        if progress is not None:
            progress(len(part))
    return logs, comps


def summarise(components: list[dict], categories: list[str], rewards: list[float] | None = None
              ) -> dict[str, dict[str, float]]:
    """Mean of each component per category and over all: {"all" | category: {name: mean}}."""
    rows = [{**c, **({"reward": rewards[i]} if rewards is not None else {})} for i, c in enumerate(components)]
    out = {}
    for name in ("all", *sorted(set(categories))):
        sel = [r for r, c in zip(rows, categories) if name in ("all", c)]
        keys = [k for k, v in sel[0].items() if isinstance(v, (int, float))] if sel else []
        out[name] = {k: float(np.mean([r[k] for r in sel])) for k in keys}
        out[name]["episodes"] = float(len(sel))
    return out


def mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """I(X; Y) in bits from paired discrete samples (plug-in estimate)."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0:
        return 0.0
    xs, xi = np.unique(x, return_inverse=True)
    ys, yi = np.unique(y, return_inverse=True)
    joint = np.zeros((len(xs), len(ys)))
    np.add.at(joint, (xi, yi), 1.0)
    joint /= joint.sum()
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log2(joint[nz] / (px @ py)[nz])))


def expert_stats(rollout: Rollout, n_experts: int | None = None) -> dict[str, Any]:
    """Per MoE layer: load share per expert, max/mean load, and the mutual information between
    each decision's top-1 routed expert and its episode's category (as a share of H(category))."""
    cats = np.array([rollout.categories[e] for e in rollout.episode.tolist()])
    _, counts = np.unique(cats, return_counts=True)
    p = counts / counts.sum()
    h_cat = float(-(p * np.log2(p)).sum()) if len(p) > 1 else 0.0
    layers = []
    for e in rollout.experts:
        n_exp = n_experts or (int(e.max()) + 1 if e.numel() else 1)
        load = torch.bincount(e.reshape(-1), minlength=n_exp).double()
        share = (load / load.sum()).tolist()
        mi = mutual_information(e[:, 0].numpy(), cats)
        by_cat = {c: (torch.bincount(e[torch.as_tensor(cats == c)].reshape(-1), minlength=n_exp).double()
                      / max(1, int((cats == c).sum()) * e.shape[1])).tolist() for c in sorted(set(cats))}
        layers.append({"load_share": share, "max_over_mean": float(load.max() / load.mean()) if load.sum() else math.nan,
                       "mi_bits": mi, "mi_share": mi / h_cat if h_cat else 0.0, "by_category": by_cat})
    return {"layers": layers}
