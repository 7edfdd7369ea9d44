"""``drive``: a language model plans in highway-env (issue 15's task; needs the ``driving`` extra).

An example is a start state (category, seed): the prompt is the scene at reset as text
(``driving.reasoner.scene_text``), the answer one codebook plan (``speed 20 keep``). Grading drives
it: the plan's anchor is tracked for ``horizon`` seconds (re-planned with the same anchor every
decision, i.e. held), and the episode is scored by the driving reward (``driving.reward``):

    accuracy  = the drive was safe (no collision, on the road: the reward's gates)
    credit    = the driving reward in [0, 1] (gates × weighted progress, TTC, comfort, speed)
    reward    = accuracy_weight · credit + format_weight · format (``Task.assemble_reward``)

An answer that does not parse as exactly one plan is a failure with format credit only, never a
crash; a simulator that throws is a failure (``Grade.error``). Train and test start states come
from disjoint seed ranges (``driving.rollout``): test seeds ≥ 10^6.

    r1lab eval --task drive --model runs/lm-driver/final
    r1lab zero --task drive --model runs/lm-driver/sft/final      # GRPO through the same RL step
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from r1lab.tasks.base import Grade, Task, TaskOptions


@dataclass
class DriveOptions(TaskOptions):
    categories: str = field(default="highway,urban,roundabout", metadata={"help": "scenario categories"})
    horizon: float = field(default=3.0, metadata={"help": "seconds a plan is held when it is graded"})
    train_size: int = field(default=3000, metadata={"help": "training start states"})
    test_size: int = field(default=60, metadata={"help": "held-out start states (split evenly by category)"})


@lru_cache(maxsize=8192)
def _scene(category: str, seed: int, duration: float) -> str:
    from r1lab.driving.env import Episode
    from r1lab.driving.reasoner import scene_text

    ep = Episode(category, seed, duration=duration)
    obs = ep.reset()
    ep.close()
    if obs is None:
        raise RuntimeError(f"{category} seed {seed}: the simulator failed at reset ({ep.error})")
    return scene_text(obs, duration)


def drive_plan(category: str, seed: int, anchor: int, horizon: float) -> tuple[float, dict[str, float]]:
    """Hold ``anchor`` from the start state for ``horizon`` seconds: (reward, components)."""
    from r1lab.driving.env import Episode
    from r1lab.driving.reward import episode_reward

    ep = Episode(category, seed, duration=horizon)
    ep.reset()
    while not ep.done:
        ep.decide(anchor)
    ep.close()
    return episode_reward(ep.summary())


class Drive(Task):
    name = "drive"
    default_template = "r1"
    needs_answer = False  # graded by driving, not against a gold answer

    def __init__(self, options: DriveOptions | None = None, **kwargs: Any):
        super().__init__(options or DriveOptions(), **kwargs)
        from r1lab.driving.env import CATEGORIES

        cats = self.categories()
        bad = [c for c in cats if c not in CATEGORIES]
        if bad or not cats:
            raise ValueError(f"categories: unknown {bad or cats}; choose from {', '.join(CATEGORIES)}")
        if not self.options.horizon > 0 or self.options.train_size < 1 or self.options.test_size < 1:
            raise ValueError("horizon must be > 0, train_size and test_size >= 1")

    def categories(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.options.categories.split(",") if c.strip())

    def examples(self, split: str) -> list[dict]:
        from r1lab.driving.rollout import HELD_OUT_SEED

        cats = self.categories()
        if split == "test":
            per = max(1, self.options.test_size // len(cats))
            starts = [(c, HELD_OUT_SEED + i) for c in cats for i in range(per)]
        elif split == "train":
            starts = [(cats[i % len(cats)], int(hashlib.sha1(f"drive-{i}".encode()).hexdigest(), 16) % HELD_OUT_SEED)
                      for i in range(self.options.train_size)]
        else:
            raise ValueError(f"drive has splits 'train' and 'test', not {split!r}")
        return [{"id": f"drive-{c}-{s}", "category": c, "seed": s, "task": "drive"} for c, s in starts]

    def question(self, example: dict) -> str:
        return _scene(example["category"], int(example["seed"]), 10.0)

    def extract(self, completion: str) -> str | None:
        from r1lab.driving.reasoner import parse_plan

        ans = self._answer(completion)
        return ans if parse_plan(ans) is not None else None

    def _answer(self, completion: str) -> str | None:
        from r1lab.rewards.format import parse_response

        ans = parse_response(completion, self.prompt_opens_think()).answer
        return ans.strip() if ans else None

    def drive(self, example: dict, completion: str) -> tuple[Grade, float, dict[str, float]]:
        """(grade, driving reward, its components) of one completion."""
        from r1lab.driving.reasoner import parse_plan
        from r1lab.rewards.format import parse_response

        fmt = parse_response(completion, self.prompt_opens_think()).format_ok
        answer = self.extract(completion)
        if answer is None:
            return Grade(correct=False, format_ok=fmt, extracted=None), 0.0, {}
        try:
            reward, comps = drive_plan(example["category"], int(example["seed"]), parse_plan(answer),
                                       self.options.horizon)
        except Exception as exc:  # noqa: BLE001  (a grader failure is reported, never raised)
            return Grade(correct=False, format_ok=fmt, extracted=answer, error=f"{type(exc).__name__}: {exc}"), 0.0, {}
        return Grade(correct=comps["gate"] == 1.0, format_ok=fmt, extracted=answer), reward, comps

    def grade(self, example: dict, completion: str) -> Grade:
        if not isinstance(completion, str):
            completion = "" if completion is None else str(completion)
        return self.drive(example, completion)[0]

    def reward(self, example: dict, completion: str) -> tuple[float, dict[str, float]]:
        g, reward, comps = self.drive(example, completion if isinstance(completion, str) else "")
        extra = {"drive_reward": reward, **{f"drive_{k}": v for k, v in comps.items() if k in ("collision", "progress")}}
        return self.assemble_reward(completion, g, reward, extra)
