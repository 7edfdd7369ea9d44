"""The rollout half of an RL step: draw B prompts, sample G completions each, score them.

    groups, stats, shown = collect(step, engine, prompts, reward, settings)

``groups`` is a list of at most B ``Group``s (one prompt, its G samples, rewards, reward
components). With DAPO dynamic sampling, groups whose rewards have no spread are dropped and
fresh prompts are drawn (up to ``max_refills`` more rollouts); the statistics are of the first
rollout only, so accuracy curves are not biased by the refills. Prompt order and sampling seeds
are functions of (seed, step, attempt): a resumed run draws what the uninterrupted one drew.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from r1lab import distributed
from r1lab.engine.rollout import Engine, Sample, SamplingParams
from r1lab.evaluation.reflection import reflection_rate
from r1lab.rewards.safe import overlong_penalty
from r1lab.rl.settings import RLSettings

# (examples, completions) -> (rewards, components per sample, {"reward_errors", "reward_timeouts"})
RewardFn = Callable[[list[dict], list[str]], tuple[list[float], list[dict], dict]]


@dataclass
class Prompts:
    """The training prompts of an RL run: examples and how to render one as the model's prompt."""

    examples: list[dict]
    render: Callable[[dict], str]
    stop: tuple[str, ...] = ("</answer>",)


@dataclass
class Group:
    """One prompt's G samples, in the engine's prompt-major order."""

    example: dict
    samples: list[Sample]
    rewards: list[float]
    components: list[dict[str, float]]


def prompt_indices(step: int, attempt: int, n_examples: int, b: int, seed: int) -> list[int]:
    """Deterministic in (seed, step): epochs over a seeded permutation; refills draw afresh."""
    if attempt > 0:
        return random.Random(f"{seed}-{step}-refill-{attempt}").sample(range(n_examples), min(b, n_examples))
    per_epoch = max(1, n_examples // b)
    epoch, k = divmod(step, per_epoch)
    perm = random.Random(f"{seed}-epoch-{epoch}").sample(range(n_examples), n_examples)
    return [perm[(k * b + j) % n_examples] for j in range(b)]


def collect(
    step: int, engine: Engine, prompts: Prompts, reward: RewardFn, s: RLSettings
) -> tuple[list[Group], dict[str, float], list[dict[str, Any]]]:
    """Rollout + rewards for one step. Returns (groups, statistics, shown samples): the shown
    samples are the first completion of the first three prompts, for a run's samples log."""
    G = s.group_size
    groups: list[Group] = []
    first = None
    shown: list[dict[str, Any]] = []
    stats = {"reward_errors": 0, "reward_timeouts": 0, "kept_groups": 0}
    tries = 1 + (s.max_refills if s.dynamic_sampling else 0)
    for attempt in range(tries):
        exs = [prompts.examples[i] for i in prompt_indices(step, attempt, len(prompts.examples), s.prompts_per_step, s.seed)]
        texts = [prompts.render(e) for e in exs]
        samples, rewards, comps, errs = sample_and_score(engine, texts, exs, reward, s, G,
                                                         s.seed * 1_000_003 + step * 101 + attempt, prompts.stop)
        flat_ex = [e for e in exs for _ in range(G)]
        for key in ("reward_errors", "reward_timeouts"):
            stats[key] += errs[key]
        for i, x in enumerate(samples):
            pen = overlong_penalty(len(x.completion_ids), s.max_new_tokens, s.overlong_buffer)
            if pen:
                rewards[i] += pen
                comps[i]["overlong"] = pen
        if first is None:
            first = (samples, rewards, comps, flat_ex)
            shown = [{"prompt": texts[g], "completion": samples[g * G].text, "reward": rewards[g * G],
                      "correct": bool(comps[g * G].get("accuracy", 0.0))} for g in range(min(3, len(exs)))]
        for g in range(len(exs)):
            sl = slice(g * G, (g + 1) * G)
            r = rewards[sl]
            if not s.dynamic_sampling or max(r) - min(r) > 1e-9:
                groups.append(Group(exs[g], samples[sl], r, comps[sl]))
        if len(groups) >= s.prompts_per_step:
            break
    groups = groups[: s.prompts_per_step]
    stats.update(rollout_stats(*first, G, s.reflection_words), kept_groups=len(groups))
    return groups, stats, shown


def sample_and_score(engine: Engine, texts: list[str], exs: list[dict], reward: RewardFn, s: RLSettings, G: int,
                     seed: int, stop: tuple[str, ...]) -> tuple[list[Sample], list[float], list[dict], dict[str, int]]:
    """G samples of each prompt and their rewards, prompt-major. Under torchrun each rank samples
    and scores its block of the prompts with those samples' own random streams, and every rank
    receives the whole batch (``distributed``), so the result is the single-process one."""
    lo, hi = distributed.block(len(texts))
    params = SamplingParams(s.max_new_tokens, s.temperature, s.top_p, s.top_k, stop,
                            seed=seed, stream_offset=lo * G)
    samples = engine.generate(texts[lo:hi], params, n=G).samples if hi > lo else []
    flat_ex = [e for e in exs[lo:hi] for _ in range(G)]
    rewards, comps, errs = reward(flat_ex, [x.text for x in samples]) if samples else ([], [], {})
    parts = distributed.gather((samples, rewards, comps, errs))
    totals = {k: sum(p[3].get(k, 0) for p in parts) for k in ("reward_errors", "reward_timeouts")}
    return [x for p in parts for x in p[0]], [x for p in parts for x in p[1]], [x for p in parts for x in p[2]], totals


def rollout_stats(samples: list[Sample], rewards: list[float], comps: list[dict], examples: list[dict], G: int,
                  reflection_words: list[str]) -> dict[str, float]:
    """Means over one rollout of N = B·G samples: reward, accuracy, lengths, truncation,
    reflection, entropy per token, share of groups with no reward spread, reward components;
    for a task mixture also ``task/NAME/{accuracy,reward,response_length,share}`` per member."""
    lengths = [len(x.completion_ids) for x in samples]
    spread = [max(rewards[i : i + G]) - min(rewards[i : i + G]) > 1e-9 for i in range(0, len(rewards), G)]
    stats = dict(
        reward=sum(rewards) / len(rewards),
        accuracy=sum(c.get("accuracy", 0.0) for c in comps) / len(comps),
        response_length=sum(lengths) / len(lengths),
        response_length_max=max(lengths),
        truncated_share=sum(x.finish_reason == "length" for x in samples) / len(samples),
        reflection_rate=reflection_rate([x.text for x in samples], reflection_words),
        entropy=sum(sum(x.entropies or ()) for x in samples) / max(sum(lengths), 1),
        zero_spread_share=1.0 - sum(spread) / len(spread),
        completion_tokens=sum(lengths),
        sequence_tokens=sum(len(x.prompt_ids) + len(x.completion_ids) for x in samples),  # prompt + completion
    )
    for key in sorted({k for c in comps for k in c}):
        stats[f"reward/{key}"] = sum(c.get(key, 0.0) for c in comps) / len(comps)
    for name in sorted({ex["task"] for ex in examples if "task" in ex}):
        idx = [i for i, ex in enumerate(examples) if ex.get("task") == name]
        stats[f"task/{name}/accuracy"] = sum(comps[i].get("accuracy", 0.0) for i in idx) / len(idx)
        stats[f"task/{name}/reward"] = sum(rewards[i] for i in idx) / len(idx)
        stats[f"task/{name}/response_length"] = sum(lengths[i] for i in idx) / len(idx)
        stats[f"task/{name}/share"] = len(idx) / len(examples)
    return stats
