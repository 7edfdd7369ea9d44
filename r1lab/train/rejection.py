"""Rejection sampling as R1's stage 3 did it: keep good samples, drop unreadable ones, add data.

    rows, summary = select(candidates, task, Rules(max_per_prompt=4, hindsight=0.2), rng)

``candidates`` holds, per prompt, the sampled completions with their rewards and grades. Rules,
applied in this order (``summary["removed"]`` counts what each one removed):

1. ``keep``: ``correct`` (the task's grader says so) or ``top`` (the ``top_n`` highest rewards,
   ties broken by order);
2. readability (``evaluation.readability``): tags, mixed languages, long paragraphs, code blocks
   in a non-code task, over-long responses — each can be switched off;
3. duplicates of a completion already kept for the same prompt;
4. at most ``max_per_prompt`` per prompt.

Added rows, each capped as a share of the reasoning rows kept and reported:

- ``hindsight``: goal relabelling (HIR, "change the goal state to fit the trajectory"): a failed
  but well-formed attempt becomes a correct example of the goal it actually reached, where the
  task has an exact relabel (``Task.relabel``; Countdown: the target becomes the value its
  expression computes, and the final check reads "ok");
- ``start_state``: "varying start state": a correct completion's first steps move into the prompt,
  the response is the rest (teaches finishing from an intermediate state);
- ``non_reasoning``: the answer without reasoning (an empty think block), R1's non-reasoning mix.

Every row records where it came from (``source``) and the example's id and task.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from r1lab import distributed
from r1lab.evaluation.readability import Limits, problems
from r1lab.rewards.format import parse_response

SOURCES = ("sample", "hindsight", "start_state", "non_reasoning")
RULES_HELP = ("readability filters applied: tags (missing/repeated/misplaced), mixed_language, long_paragraph, "
              "code_block (outside code tasks), too_long")


@dataclass
class Candidate:
    example: dict
    prompt: str
    completion: str
    reward: float
    correct: bool


@dataclass
class Rules:
    keep: str = "correct"  # correct | top
    top_n: int = 1
    max_per_prompt: int = 4
    dedupe: bool = True
    filters: tuple[str, ...] = ("tags", "mixed_language", "long_paragraph", "code_block", "too_long")
    limits: Limits = field(default_factory=Limits)
    language: str = "en"  # the reasoning's target language ('' = the example's own, else this)
    hindsight: float = 0.0  # cap: relabelled rows as a share of the kept sample rows
    start_state: float = 0.0
    non_reasoning: float = 0.0


def _row(c: Candidate, source: str, prompt: str | None = None, response: str | None = None,
         example: dict | None = None) -> dict[str, Any]:
    ex = example or c.example
    return {"prompt": c.prompt if prompt is None else prompt, "response": c.completion if response is None else response,
            "source": source, "id": ex.get("id"), "task": ex.get("task"), "reward": c.reward}


def _readable(c: Candidate, task, rules: Rules) -> list[str]:
    lang = c.example.get("language") or rules.language or "en"
    found = problems(c.completion, lang, code_task=getattr(task, "name", "") == "code" or c.example.get("task") == "code",
                     limits=rules.limits, prompt_opens_think=task.prompt_opens_think())
    return [p for p in found if p in rules.filters]


def select(groups: list[list[Candidate]], task, rules: Rules, rng: random.Random,
           tokenizer: Any = None) -> tuple[list[dict], dict]:
    """Rows for SFT and a summary of what was kept, removed (by rule) and added (by source)."""
    removed: Counter = Counter()
    kept: list[dict] = []
    failed: list[Candidate] = []
    correct_kept: list[Candidate] = []
    for group in groups:
        if rules.keep == "top":
            ranked = sorted(range(len(group)), key=lambda i: -group[i].reward)[: rules.top_n]
            chosen = [group[i] for i in sorted(ranked)]
            removed["not_top"] += len(group) - len(chosen)
        else:
            chosen = [c for c in group if c.correct]
            removed["incorrect"] += len(group) - len(chosen)
            failed += [c for c in group if not c.correct]
        seen, n = set(), 0
        for c in chosen:
            bad = _readable(c, task, rules)
            if bad:
                removed[bad[0]] += 1
                continue
            if rules.dedupe and c.completion in seen:
                removed["duplicate"] += 1
                continue
            if n >= rules.max_per_prompt:
                removed["over_max_per_prompt"] += 1
                continue
            seen.add(c.completion)
            n += 1
            kept.append(_row(c, "sample"))
            correct_kept.append(c)
    base = len(kept)
    added = {"hindsight": _hindsight(failed, task, rules, rng, int(rules.hindsight * base), tokenizer),
             "start_state": _start_states(correct_kept, rng, int(rules.start_state * base)),
             "non_reasoning": _non_reasoning(correct_kept, task, rng, int(rules.non_reasoning * base))}
    rows = kept + [r for src in ("hindsight", "start_state", "non_reasoning") for r in added[src]]
    summary = {"candidates": sum(len(g) for g in groups), "prompts": len(groups), "kept": base,
               "prompts_with_a_kept_sample": len({r["id"] for r in kept}), "removed": dict(removed),
               "added": {k: len(v) for k, v in added.items()}, "rows": len(rows)}
    return rows, summary


def _hindsight(failed: list[Candidate], task, rules: Rules, rng: random.Random, cap: int,
               tokenizer: Any = None) -> list[dict]:
    relabel = getattr(task, "relabel", None)
    if cap <= 0 or relabel is None:
        return []
    out, seen = [], set()
    for c in rng.sample(failed, len(failed)):
        got = relabel(c.example, c.completion)
        if got is None:
            continue
        new_example, completion = got
        prompt = task.prompt(new_example, tokenizer)
        if (prompt, completion) in seen or _readable(Candidate(new_example, prompt, completion, 0.0, True), task, rules):
            continue
        seen.add((prompt, completion))
        out.append(_row(c, "hindsight", prompt, completion, new_example))
        if len(out) >= cap:
            break
    return out


def _start_states(correct: list[Candidate], rng: random.Random, cap: int) -> list[dict]:
    out = []
    for c in rng.sample(correct, len(correct))[: max(cap, 0)]:
        think, sep, rest = c.completion.partition("</think>")
        words = think.split(" ")
        if not sep or len(words) < 3:
            continue
        cut = rng.randint(1, len(words) - 1)
        head = " ".join(words[:cut]) + " "
        out.append(_row(c, "start_state", c.prompt + head, c.completion[len(head):]))
    return out


def _non_reasoning(correct: list[Candidate], task, rng: random.Random, cap: int) -> list[dict]:
    out, seen = [], set()
    for c in rng.sample(correct, len(correct)):
        if len(out) >= cap:
            break
        answer = parse_response(c.completion, task.prompt_opens_think()).answer
        if not answer or (c.prompt, answer) in seen:
            continue
        seen.add((c.prompt, answer))
        out.append(_row(c, "non_reasoning", response=f"</think><answer>{answer}</answer>"))
    return out


def sample_groups(task, tok, engine, rewards, examples: list[dict], k: int, params, batch_size: int = 256,
                  desc: str = "sample") -> list[list[Candidate]]:
    """k scored samples for every example through ``engine`` (one ``Candidate`` group per prompt);
    ``rewards`` is a ``RewardRunner`` (a raising or hanging reward scores 0). Sample j of example
    i draws from random stream i·k + j under seed ``params.seed * 1_000_003``, so a run is
    reproducible and independent of ``batch_size``; under torchrun each rank samples and scores a
    contiguous block of the examples and every rank returns all groups."""
    from dataclasses import replace

    from tqdm import tqdm

    per_chunk = max(1, batch_size // k)
    groups = []
    lo, hi = distributed.block(len(examples))
    bar = tqdm(total=hi - lo, desc=desc, unit="prompt", dynamic_ncols=True, disable=not distributed.is_main())
    seed = (params.seed or 0) * 1_000_003
    for start in range(lo, hi, per_chunk):
        chunk = examples[start : min(start + per_chunk, hi)]
        prompts = [task.prompt(ex, tok) for ex in chunk]
        out = engine.generate(prompts, replace(params, seed=seed, stream_offset=start * k), n=k)
        flat = [ex for ex in chunk for _ in range(k)]
        texts = [s.text for s in out.samples]
        values, comps, _ = rewards(flat, texts)
        for i, ex in enumerate(chunk):
            groups.append([Candidate(ex, prompts[i], texts[j], values[j], bool(comps[j].get("accuracy", 0.0)))
                           for j in range(i * k, (i + 1) * k)])
        bar.update(len(chunk))
    bar.close()
    return [g for part in distributed.gather(groups) for g in part]
