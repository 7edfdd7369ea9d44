"""Task mixtures: ``countdown:0.5,knights_knaves:0.25,gsm8k:0.25`` as one task.

    task = get_task("countdown:0.5,knights_knaves:0.5")
    task.examples("train")   # weighted: about half of the prompts from each
    task.grade(example, completion)   # dispatched to the example's own task

R1's last stage trains on "all scenarios" at once; this is how r1lab mixes them. Every example
carries ``task`` (its member's name) and an id prefixed by it; prompt, grade and reward go to
that member, so each task keeps its own template, extraction and grader.

- train: a list as long as the members' training sets together, where each slot is drawn from a
  member with probability ∝ its weight (seeded) and takes that member's next example (each member's
  list is shuffled once and cycled). Uniform draws from it — what the RL step does — are then
  weighted draws of tasks.
- test: the members' held-out sets interleaved round-robin, so that the first N problems of a
  mixture hold about N / members of each; evaluations report pass@1 per task as well
  (``evaluation.evaluate``).

Weights need not sum to 1 (they are normalised); a name without a weight counts 1. Options given
to the mixture (template, language, data, …) go to every member that has that option; an option
no member has is an error.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from r1lab.tasks.base import Grade, Task, TaskOptions


def parse_spec(spec: str) -> list[tuple[str, float]]:
    """'countdown:0.5,rg:knights_knaves:0.5' -> [('countdown', 0.5), ('rg:knights_knaves', 0.5)]."""
    out = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            raise ValueError(f"task mixture {spec!r}: an empty entry")
        name, _, tail = item.rpartition(":")
        try:
            weight = float(tail)
        except ValueError:
            name, weight = item, 1.0
        if not name:
            raise ValueError(f"task mixture {spec!r}: {item!r} has no task name")
        if not weight > 0:
            raise ValueError(f"task mixture {spec!r}: the weight of {name!r} must be > 0")
        out.append((name, weight))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"task mixture {spec!r}: a task is named twice")
    return out


def is_mixture(spec: str) -> bool:
    """More than one task, or one task with an explicit weight."""
    return "," in spec or len(parse_spec(spec)) == 1 and parse_spec(spec)[0][0] != spec


class Mixture(Task):
    name = "mixture"

    def __init__(self, members: dict[str, Task], weights: dict[str, float], seed: int = 0):
        self.members, self.seed = members, seed
        self.needs_answer = any(t.needs_answer for t in members.values())
        total = sum(weights.values())
        self.weights = {k: w / total for k, w in weights.items()}
        first = next(iter(members.values()))
        self.options = TaskOptions(template=first.options.template, language=first.options.language)

    def member(self, example: dict) -> Task:
        name = example.get("task")
        if name not in self.members:
            raise ValueError(f"example {example.get('id')!r} has task {name!r}, not one of {', '.join(self.members)}")
        return self.members[name]

    def examples(self, split: str) -> list[dict]:
        per = {n: [{**ex, "task": n, "id": f"{n}/{ex.get('id')}"} for ex in t.examples(split)]
               for n, t in self.members.items()}
        if split != "train":
            rounds = itertools.zip_longest(*per.values())
            return [ex for row in rounds for ex in row if ex is not None]
        rng = random.Random(f"mixture-{self.seed}")
        for rows in per.values():
            rng.shuffle(rows)
        names = list(per)
        cursor = dict.fromkeys(names, 0)
        out = []
        for name in rng.choices(names, [self.weights[n] for n in names], k=sum(len(r) for r in per.values())):
            rows = per[name]
            if rows:
                out.append(rows[cursor[name] % len(rows)])
                cursor[name] += 1
        return out

    def prompt(self, example: dict, tokenizer: Any = None) -> str:
        return self.member(example).prompt(example, tokenizer)

    def question(self, example: dict) -> str:
        return self.member(example).question(example)

    def grade(self, example: dict, completion: str) -> Grade:
        return self.member(example).grade(example, completion)

    def grade_many(self, examples: list[dict], completions: list[str]) -> list[Grade]:
        """Each member grades its own examples in one batch (math compares in one worker trip)."""
        if len(examples) != len(completions):
            raise ValueError(f"grade_many: {len(examples)} examples but {len(completions)} completions")
        out: list[Grade | None] = [None] * len(examples)
        for name, task in self.members.items():
            idx = [i for i, ex in enumerate(examples) if ex.get("task") == name]
            if idx:
                for i, g in zip(idx, task.grade_many([examples[i] for i in idx], [completions[i] for i in idx])):
                    out[i] = g
        for i, g in enumerate(out):
            if g is None:
                self.member(examples[i])  # raises: an example of no member
        return out  # type: ignore[return-value]

    def reward(self, example: dict, completion: str) -> tuple[float, dict[str, float]]:
        return self.member(example).reward(example, completion)

    def language_of(self, example: dict) -> str:
        return self.member(example).language_of(example)

    def prompt_opens_think(self) -> bool:
        return self.options.template in ("r1", "short")

    def describe(self) -> dict[str, Any]:
        return {"task": "mixture", "weights": self.weights, "members": {n: t.describe() for n, t in self.members.items()}}
