"""One RL step, the loop every RL command runs: rollout -> reward -> advantage -> update -> metrics.

    learner = Learner(policy, optimizer, pad_id)                  # + ref (β > 0), critic (PPO)
    engine = HFEngine(policy, tokenizer)                          # or any ``Engine``
    prompts = Prompts(task.examples("train"), lambda ex: task.prompt(ex, tokenizer))
    result = rl_step(step, learner, engine, prompts, RewardRunner(task), RLSettings(), lr=1e-4)
    result.metrics["reward"], result.metrics["kl"], result.shown[0]["completion"]

GRPO, PPO and on-policy distillation share every line but the advantage (group baseline, a
critic's GAE, or a teacher's per-token log-ratio, chosen by what the learner holds); Dr. GRPO, DAPO and GSPO are settings of the same step
(``RLSettings``). The engine samples from the policy's own weights, so it sees each update at
once. Nothing here writes files or knows about run directories: commands log ``metrics``.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from r1lab.engine.rollout import Engine
from r1lab.rl.collect import Group, Prompts, RewardFn, collect
from r1lab.rl.learner import Learner
from r1lab.rl.settings import RLSettings
from r1lab.rl.update import prepare, update


@dataclass
class StepResult:
    metrics: dict[str, float]  # one metrics.jsonl row (without "step")
    shown: list[dict[str, Any]] = field(default_factory=list)  # a few sampled completions to log
    groups: list[Group] = field(default_factory=list)  # the groups trained on (for a rollout dump)


def rl_step(step: int, learner: Learner, engine: Engine, prompts: Prompts, reward: RewardFn,
            settings: RLSettings, lr: float) -> StepResult:
    """Run RL step ``step`` (its prompts and seeds are functions of ``settings.seed`` and ``step``)."""
    t0 = time.time()
    groups, stats, shown = collect(step, engine, prompts, reward, settings)  # rollout -> reward
    t_rollout = time.time() - t0
    stats.update({"time/rollout": t_rollout, "tokens_per_s": stats.pop("completion_tokens") / max(t_rollout, 1e-9)})
    if not groups:  # dynamic sampling found no group with reward spread
        stats.update(skipped_step=1.0, lr=lr, **{"time/update": 0.0, "time/step": t_rollout})
        return StepResult(stats, shown, groups)
    batch = prepare(groups, learner, settings)  # π_old, π_ref, V_old -> advantages
    stats["trained_share"] = float(batch.train.float().mean())
    stats.update(batch.stats)
    t1 = time.time()
    stats.update(update(batch, learner, settings, lr, step))  # μ epochs of clipped-surrogate steps
    stats.update({"time/update": time.time() - t1, "time/step": time.time() - t0, "lr": lr})
    stats["sequences"] = float(len(batch.pk.lengths))
    stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        stats["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return StepResult(stats, shown, groups)
