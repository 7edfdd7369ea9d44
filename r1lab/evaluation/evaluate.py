"""Sample k completions per problem, grade them with the task's ``grade()``, summarise as R1 does.

    metrics, records = evaluate(model, tokenizer, task, examples, k=8, params=SamplingParams(192, 0.6, 0.95))

pass@1 is the mean correctness over all k samples (then over problems), cons@k the correctness
of the majority answer, pass@k the unbiased estimator (``metrics.py``); also the readability R1
filtered for: language consistency of the reasoning in the prompt's language, the share of
responses with mixed languages, the longest paragraph (``readability.py``). Sampling goes through
``engine.rollout.HFEngine``, the engine GRPO trains with; grading through the same ``grade()``
the reward calls. Used by ``r1lab eval`` and by every training command's held-out evaluation.
"""

from __future__ import annotations

import time
from dataclasses import replace

from tqdm import tqdm

from r1lab import distributed
from r1lab.engine.rollout import HFEngine, SamplingParams
from r1lab.evaluation.metrics import summarize
from r1lab.evaluation.readability import readability_stats
from r1lab.evaluation.reflection import reflection_rate


def evaluate(
    model,
    tokenizer,
    task,
    examples: list[dict],
    k: int,
    params: SamplingParams,
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[dict[str, float], list[dict]]:
    """Sample k completions per example, grade them, and summarise.

    Returns (metrics, records); records hold each problem's prompt, completions and grades.
    Sample j of problem i draws from random stream i·k + j, so results do not depend on
    ``batch_size``; under torchrun each rank samples and grades a contiguous block of the
    problems and every rank returns the metrics of all of them.
    """
    engine = HFEngine(model, tokenizer, max_batch=batch_size)
    per_chunk = max(1, batch_size // k)
    records, grades, lengths = [], [], []
    t0 = time.time()
    n_tokens = 0
    lo, hi = distributed.block(len(examples))
    bar = tqdm(total=hi - lo, desc="eval", unit="problem", disable=not progress or not distributed.is_main(),
               dynamic_ncols=True)
    for start in range(lo, hi, per_chunk):
        chunk = examples[start : min(start + per_chunk, hi)]
        prompts = [task.prompt(ex, tokenizer) for ex in chunk]
        out = engine.generate(prompts, replace(params, stream_offset=params.stream_offset + start * k), n=k)
        flat = task.grade_many([ex for ex in chunk for _ in range(k)], [s.text for s in out.samples])
        for i, ex in enumerate(chunk):
            samples = out.samples[i * k : (i + 1) * k]
            g = flat[i * k : (i + 1) * k]
            grades.append(g)
            lengths.append([len(s.completion_ids) for s in samples])
            n_tokens += sum(lengths[-1])
            records.append(
                {
                    "id": ex.get("id"),
                    **({"task": ex["task"]} if "task" in ex else {}),
                    "prompt": prompts[i],
                    "answer": ex.get("answer"),
                    "responses": [s.text for s in samples],
                    "correct": [x.correct for x in g],
                    "extracted": [x.extracted for x in g],
                    "finish": [s.finish_reason for s in samples],
                }
            )
        bar.update(len(chunk))
        done = [c for r in records for c in r["correct"]]
        bar.set_postfix(pass1=f"{sum(done) / max(1, len(done)):.3f}")
    bar.close()
    parts = distributed.gather((records, grades, lengths, n_tokens))
    records, grades, lengths = ([x for p in parts for x in p[i]] for i in range(3))
    n_tokens = sum(p[3] for p in parts)
    metrics = summarize(grades, lengths)
    metrics.update(per_task(examples, grades, lengths))
    texts = [t for r in records for t in r["responses"]]
    metrics["reflection_rate"] = reflection_rate(texts)
    langs = [task.language_of(ex) or "en" for ex in examples for _ in range(k)]  # each prompt's own (mix)
    metrics.update(readability_stats(texts, langs, task.prompt_opens_think()))
    metrics["truncated_share"] = sum(f == "length" for r in records for f in r["finish"]) / max(1, len(texts))
    metrics["tokens_per_s"] = n_tokens / max(1e-9, time.time() - t0)
    metrics["seconds"] = time.time() - t0
    return metrics, records


def per_task(examples: list[dict], grades: list[list], lengths: list[list[int]]) -> dict[str, float]:
    """For a task mixture (examples carry ``task``): ``NAME/pass@1``, ``NAME/cons@k``,
    ``NAME/format_rate``, ``NAME/mean_length`` and ``NAME/n_problems`` of each member."""
    out: dict[str, float] = {}
    for name in sorted({ex["task"] for ex in examples if "task" in ex}):
        idx = [i for i, ex in enumerate(examples) if ex.get("task") == name]
        sub = summarize([grades[i] for i in idx], [lengths[i] for i in idx])
        for key in ("pass@1", "cons@k", "format_rate", "mean_length", "n_problems"):
            if key in sub:
                out[f"{name}/{key}"] = sub[key]
    return out
