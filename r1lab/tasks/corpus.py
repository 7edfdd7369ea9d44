"""The synthetic pretraining corpus of the embedded default base model.

Each document is a prompt in the short template followed by a worked solution and EOS, in
English (most) and Chinese: Countdown, Arithmetic, Knights and Knaves, toy code, and a share of
non-reasoning answers (an empty think block, the answer at once; R1 mixed such data into its
SFT). Only train-split instances appear.

The solutions are written to leave a base with some, far from full, ability and a behaviour —
checking and retrying — that RL can discover is worth more: R1-Zero's story in miniature.

- Countdown (``countdown.worked_solution``): attempts of varying quality, each computed and
  checked against the target; after a failed check a new attempt follows only *sometimes*
  ("wait, let me try again."), otherwise the document gives up with a wrong answer.
- Knights and Knaves (``knights_knaves.worked_solution``): case analysis — try an assignment,
  check each statement in order until a contradiction or all hold; retry only sometimes, by
  flipping the person whose statement failed.
- Toy code (``toycode.worked_solution``): attempts at the unnamed constant, each computed on the
  spec's example step by step and compared with its output ("too big"); after a failed check a
  new attempt follows only sometimes, on the side the comparison points to.
- Arithmetic: step-by-step evaluation (always right).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from r1lab.tasks import arithmetic, countdown, knights_knaves, toycode
from r1lab.tasks.base import SHORT_TEMPLATE


@dataclass
class CorpusMix:
    """Shares of the document kinds (normalised), the Chinese share, and each kind's style."""

    countdown_share: float = 0.55
    arithmetic_share: float = 0.10
    kk_share: float = 0.15
    code_share: float = 0.12
    direct_share: float = 0.08  # non-reasoning answers, over all four tasks
    zh_share: float = 0.15
    kk_people: tuple[int, int] = (2, 4)
    kk_depth: int = 2
    style: countdown.CorpusStyle = field(default_factory=countdown.CorpusStyle)
    kk_style: knights_knaves.KKStyle = field(default_factory=lambda: knights_knaves.KKStyle(first_correct=0.25,
                                                                                             retry=0.65))
    code_style: toycode.CodeStyle = field(default_factory=toycode.CodeStyle)


def _countdown(rng: random.Random, lang: str, mix: CorpusMix, direct: bool) -> tuple[str, str]:
    nums, target = countdown.random_instance(rng, split="train")
    q = countdown.PHRASES[lang]["question"].format(nums=" ".join(map(str, nums)), target=target)
    if direct:
        return q, f"</think><answer>{rng.choice(countdown.solutions(nums, target))[0]}</answer>"
    return q, countdown.worked_solution(nums, target, lang, rng, mix.style)


def _arithmetic(rng: random.Random, lang: str, mix: CorpusMix, direct: bool) -> tuple[str, str]:
    while True:
        nums, ops = arithmetic.random_expression(rng)
        expr = arithmetic.render(nums, ops)
        if arithmetic.split_of(expr) == "train":
            break
    body = arithmetic.worked_solution(nums, ops)
    return arithmetic.QUESTION[lang].format(expr=expr), ("</think>" + body.split("</think>")[1] if direct else body)


def _kk(rng: random.Random, lang: str, mix: CorpusMix, direct: bool) -> tuple[str, str]:
    n = rng.randint(*mix.kk_people)
    statements, sol = knights_knaves.random_puzzle(rng, n, mix.kk_depth, split="train")
    names = knights_knaves.pick_names(rng, n, lang)
    q = knights_knaves.quiz_text(statements, names, lang)
    if direct:
        return q, "</think><answer>" + knights_knaves.answer_text(names, list(sol), lang) + "</answer>"
    return q, knights_knaves.worked_solution(statements, names, lang, rng, mix.kk_style)


def _code(rng: random.Random, lang: str, mix: CorpusMix, direct: bool, train: list) -> tuple[str, str]:
    name, k, j = rng.choice(train)
    row = toycode.problem(name, k, j, rng, lang)
    if direct:
        return row["spec"], toycode.code_answer(row)
    return row["spec"], toycode.worked_solution(row, rng, lang, mix.code_style)


def documents(n: int, seed: int, mix: CorpusMix | None = None) -> list[str]:
    """``n`` documents (without EOS), deterministic in ``seed``."""
    rng = random.Random(f"corpus-{seed}")
    mix = mix or CorpusMix()
    train_code = [i for i in toycode.instances() if toycode.split_of(*i) == "train"]
    kinds = [(_countdown, mix.countdown_share), (_arithmetic, mix.arithmetic_share), (_kk, mix.kk_share),
             (lambda r, lang, m, d: _code(r, lang, m, d, train_code), mix.code_share)]
    makers, weights = zip(*kinds)
    out = []
    for _ in range(n):
        lang = "zh" if rng.random() < mix.zh_share else "en"
        direct = rng.random() < mix.direct_share
        q, body = rng.choices(makers, weights)[0](rng, lang, mix, direct)
        out.append(SHORT_TEMPLATE.format(question=q) + body)
    return out
