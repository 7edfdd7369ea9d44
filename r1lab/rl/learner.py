"""What an RL step trains: the policy and its optimizer, the frozen reference, the PPO critic.

    learner = Learner(policy, torch.optim.AdamW(policy.parameters(), lr=1e-4), pad_id=tok.pad_token_id)
    learner = Learner(policy, opt, pad_id, ref=frozen_copy)                          # β > 0
    learner = Learner(policy, opt, pad_id, critic=Critic(value_model, value_opt))    # PPO
    learner = Learner(student, opt, pad_id, teacher=frozen_teacher)                  # on-policy distillation

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
    bad_steps: int = 0

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device
