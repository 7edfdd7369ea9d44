"""The synthetic pretraining corpus of the embedded default base model.

Each document is a prompt in the short template followed by a worked solution and EOS:
Countdown (most documents) and Arithmetic, in English (most) and Chinese. Countdown solutions
are written by ``countdown.worked_solution``: attempts of varying quality, each computed and
checked against the target; after a failed check a new attempt follows only *sometimes*
("wait, let me try again."), and otherwise the document gives up with a wrong answer. This
leaves a base model with some, far from full, ability and a behaviour — retrying — that RL
can discover is worth more: R1-Zero's story in miniature. Only train-split instances appear.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from r1lab.tasks import arithmetic, countdown
from r1lab.tasks.base import SHORT_TEMPLATE


@dataclass
class CorpusMix:
    countdown_share: float = 0.75
    zh_share: float = 0.15
    style: countdown.CorpusStyle = None  # type: ignore[assignment]

    def __post_init__(self):
        if self.style is None:
            self.style = countdown.CorpusStyle()


def document(rng: random.Random, mix: CorpusMix) -> str:
    """One document (without EOS)."""
    lang = "zh" if rng.random() < mix.zh_share else "en"
    if rng.random() < mix.countdown_share:
        nums, target = countdown.random_instance(rng, split="train")
        nums_text = " ".join(map(str, nums))
        q = countdown.PHRASES[lang]["question"].format(nums=nums_text, target=target)
        body = countdown.worked_solution(nums, target, lang, rng, mix.style)
    else:
        while True:
            nums, ops = arithmetic.random_expression(rng)
            expr = arithmetic.render(nums, ops)
            if arithmetic.split_of(expr) == "train":
                break
        q = arithmetic.QUESTION[lang].format(expr=expr)
        body = arithmetic.worked_solution(nums, ops)
    return SHORT_TEMPLATE.format(question=q) + body


def documents(n: int, seed: int, mix: CorpusMix | None = None) -> list[str]:
    rng = random.Random(f"corpus-{seed}")
    mix = mix or CorpusMix()
    return [document(rng, mix) for _ in range(n)]
