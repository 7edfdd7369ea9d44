"""What an RL step trains: the policy and its optimizer, the frozen reference, the PPO critic.

    learner = Learner(policy, torch.optim.AdamW(policy.parameters(), lr=1e-4), pad_id=tok.pad_token_id)
    learner = Learner(policy, opt, pad_id, ref=frozen_copy)                          # β > 0
    learner = Learner(policy, opt, pad_id, critic=Critic(value_model, value_opt))    # PPO
    learner = Learner(student, opt, pad_id, teacher=frozen_teacher)                  # on-policy distillation
    learner = Learner(sharded_policy, opt, pad_id, rollout=full_copy)                # --parallel fsdp

With ``--parallel fsdp`` the policy's weights, gradients and AdamW state are sharded over ranks
(FSDP2), and ``rollout`` is an unsharded, gradient-free copy of the policy on every rank: the
engine samples from it, π_old is recomputed on it, and ``rl.loop`` refreshes it from the shards
after every step (``distributed.copy_full``), as verl's hybrid engine keeps a full inference copy
beside its FSDP trainer. Ranks sample different prompts for a different number of decode steps,
which a sharded model, whose every forward is a collective, cannot do.

``bad_steps`` counts non-finite updates in a row; it is part of a run's checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Critic:
    """PPO's value model (``rl.value.ValueModel``) and its optimizer."""

    model: Any
    optimizer: torch.optim.Optimizer


@dataclass
class Learner:
    policy: Any  # a transformers causal LM in train mode
    optimizer: torch.optim.Optimizer
    pad_id: int
    ref: Any = None  # frozen reference model (required when β > 0)
    critic: Critic | None = None  # PPO; None = GRPO (group baseline)
    teacher: Any = None  # on-policy distillation: advantages are the teacher's per-token log-ratio
    rollout: Any = None  # --parallel fsdp: the full copy the engine samples from (None: the policy itself)
    bad_steps: int = 0

    @property
    def sampler(self) -> Any:
        """The model rollouts, π_old and held-out evaluation run on: full weights, equal to the policy's."""
        return self.policy if self.rollout is None else self.rollout

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device
