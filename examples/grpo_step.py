"""One GRPO step on the shipped base model, from components only (nothing from ``r1lab.commands``).

    python examples/grpo_step.py                 # B = 4 Countdown prompts × G = 8 samples
    python examples/grpo_step.py --steps 3 --prompts 8 --group 16

This is the loop every r1lab RL command runs, written out: a policy and its optimizer (the
``Learner``), the rollout engine, the training prompts, the reward (the task's own rule-based
``grade()``, run with a timeout), the step's settings, and ``rl_step``, which samples, scores,
computes group advantages and takes the optimizer step. It prints each step's metrics.
"""

from __future__ import annotations

import argparse
import json

import torch

from r1lab.engine.rollout import HFEngine
from r1lab.models import load_model, load_tokenizer, pad_id
from r1lab.rewards.safe import RewardRunner
from r1lab.rl.collect import Prompts
from r1lab.rl.learner import Learner
from r1lab.rl.settings import RLSettings
from r1lab.rl.step import rl_step
from r1lab.tasks import get_task


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--prompts", type=int, default=4, help="B: prompts per step")
    p.add_argument("--group", type=int, default=8, help="G: samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=64)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    tok = load_tokenizer()  # '' = the shipped base; a directory or hub id works the same
    policy = load_model().train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    learner = Learner(policy, optimizer, pad_id(tok))

    task = get_task("countdown")
    prompts = Prompts(task.examples("train"), lambda ex: task.prompt(ex, tok))
    settings = RLSettings(prompts_per_step=args.prompts, group_size=args.group, max_new_tokens=args.max_new_tokens)
    settings.validate()
    engine = HFEngine(policy, tok)
    reward = RewardRunner(task, timeout=5.0)

    rows = []
    for step in range(args.steps):
        result = rl_step(step, learner, engine, prompts, reward, settings, lr=settings.lr)
        m = result.metrics
        rows.append({"step": step, **m})
        print(json.dumps({"step": step, "reward": m["reward"], "accuracy": m["accuracy"],
                          "response_length": m["response_length"], "loss": m.get("loss"),
                          "grad_norm": m.get("grad_norm"), "seconds": m["time/step"]}))
        print("sample:", result.shown[0]["completion"][:120].replace("\n", " "))
    return rows


if __name__ == "__main__":
    main()
