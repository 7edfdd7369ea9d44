"""Rollout speed: r1lab's ``HFEngine.generate`` vs Hugging Face ``model.generate``, one run.

    python bench/rollout.py                       # shipped base, 16 prompts × 16 samples, 128 tokens
    python bench/rollout.py --prompts 4 --n 4 --max-new-tokens 32 --repeats 1   # a smoke run

What it measures: completion tokens per second of each engine, sampling G = ``--n``
completions for each of ``--prompts`` Countdown prompts (``get_task('countdown')``, its
short template ``Use 3 5 7 to make 22.\\n<think>``), median over ``--repeats`` timed calls
(the two engines alternate, after one untimed warm-up call each); and each engine's achieved
model FLOP/s as a fraction of a fp32 matmul ceiling (``--ceiling-size``² square matmul, best
of several, measured before and after the timed calls in the same process). Useful FLOPs,
the same definition for both sides (see ``common.py``):

    Σ_tokens [2·P_mm + 4·layers·d·c],  P_mm = non-embedding + lm_head parameters,
    d = heads·head_dim, c = the token's context length (position + 1),

over the distinct prompts' tokens (prefilled once) and every real generated token. Work an
engine does beyond that (HF's per-row prefill and finished rows) is not credited.

Held equal: the model object (fp32, sdpa attention, eval mode, same threads), the prompts,
sampling (temperature 1.0, top-p 1.0, top-k off), ``max_new_tokens``, the number of
sequences, and the stopping rule (EOS or the stop string ``</answer>``; it is one token of
the shipped tokenizer, so the HF side gets it as an extra ``eos_token_id``, otherwise as
``stop_strings``). Only real tokens count on both sides: each sequence's tokens up to and
including the EOS / stop token that ended it (HF keeps decoding finished rows, as pads,
until every row is done or the limit is reached; those pads are not counted).

Not equal, by design of each engine: HF expands each prompt ``n`` times before prefill
(``num_return_sequences``) and decodes every row until the last one finishes; r1lab prefills
each distinct prompt once, repeats its KV cache, drops finished rows, and also returns the
log-prob of every sampled token (HF is asked for none, so it does less work). The random
streams are seeded alike (r1lab's ``SamplingParams.seed`` and HF's ``torch.manual_seed`` get the
same value), and with the peaked tiny base the two sides often sample identical completions;
in general they sample different completions of similar length (mean lengths are printed).

Last line: ``ratio r1lab/hf tokens_per_s: X.XXx``.
"""

from __future__ import annotations

import argparse
import random
import sys

import common
import torch

from r1lab.engine.rollout import HFEngine, SamplingParams
from r1lab.models import load_model, load_tokenizer, pick_device, resolve_model
from r1lab.tasks import get_task


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="model dir or hub id ('' = r1lab's shipped base)")
    p.add_argument("--prompts", type=int, default=16, help="distinct prompts")
    p.add_argument("--n", type=int, default=16, help="samples per prompt (G)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per engine (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores of this process)")
    p.add_argument("--system-malloc", action="store_true",
                   help="glibc's default allocator settings (default: freed memory kept, as r1lab's commands do)")
    common.add_device_args(p)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def hf_stop_kwargs(tok, eos_ids: set[int], stops: tuple[str, ...]) -> dict:
    """EOS ids for HF generate: EOS plus every stop string that is a single token; else stop_strings."""
    ids, strings = set(eos_ids), []
    for s in stops:
        enc = tok(s, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            ids.add(enc[0])
        else:
            strings.append(s)
    kw = {"eos_token_id": sorted(ids)}
    if strings:
        kw.update(stop_strings=strings, tokenizer=tok)
    return kw


def real_lengths(gen: torch.Tensor, end_ids: list[int], tok, strings: list[str]) -> list[int]:
    """Tokens of each HF row up to and including the first end token (or stop string)."""
    out = []
    end = torch.isin(gen, torch.tensor(end_ids))
    for r in range(gen.shape[0]):
        hits = end[r].nonzero()
        n = int(hits[0]) + 1 if len(hits) else gen.shape[1]
        if strings:  # a multi-token stop string ends the row where its text first appears
            row = gen[r, :n].tolist()
            for i in range(1, n + 1):
                if any(s in tok.decode(row[:i], skip_special_tokens=False) for s in strings):
                    n = i
                    break
        out.append(n)
    return out


def run_r1lab(engine, prompts, params, n, device) -> dict:
    sec, out = common.timed(lambda: engine.generate(prompts, params, n=n), device)
    return {"sec": sec, "lengths": [len(s.completion_ids) for s in out.samples]}


@torch.no_grad()
def run_hf(model, enc, n, max_new, stop_kw, tok, seed, device) -> dict:
    torch.manual_seed(seed)
    end_ids = stop_kw["eos_token_id"]
    strings = stop_kw.get("stop_strings", [])

    def call():
        return model.generate(
            **enc,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_new,
            num_return_sequences=n,
            pad_token_id=tok.pad_token_id,
            **stop_kw,
        )

    sec, out = common.timed(call, device)
    gen = out[:, enc["input_ids"].shape[1] :].cpu()
    return {"sec": sec, "lengths": real_lengths(gen, end_ids, tok, strings), "rows_decoded": gen.shape[1]}


def main(argv=None) -> None:
    args = parse_args(argv)
    common.quiet()
    common.warn_if_busy()
    threads = common.set_threads(args.threads, reuse_memory=not args.system_malloc)
    path = resolve_model(args.model)
    tok = load_tokenizer(path)
    device = pick_device(args.device)
    model = load_model(path, dtype=args.dtype, device=device)  # fp32 on CPU / bf16 on CUDA, sdpa, eval
    dtype = next(model.parameters()).dtype
    size = common.ceiling_side(args, device)
    task = get_task("countdown")
    examples = task.examples("train")
    picked = random.Random(args.seed).sample(range(len(examples)), args.prompts)
    prompts = [task.prompt(examples[i], tok) for i in picked]
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]

    engine = HFEngine(model, tok, max_batch=max(256, args.prompts * args.n))
    stops = ("</answer>",)
    stop_kw = hf_stop_kwargs(tok, engine.eos_ids, stops)
    enc = tok(prompts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt").to(device)

    def params(seed):
        return SamplingParams(args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, stop=stops, seed=seed)

    # warm-up, untimed: first-call allocations, thread pools, lazy imports
    warm = SamplingParams(8, 1.0, 1.0, 0, stops, seed=0)
    engine.generate(prompts[:2], warm, n=2)
    model.generate(**{k: v[:2] for k, v in enc.items()}, do_sample=True, top_k=0, max_new_tokens=8,
                   num_return_sequences=2, pad_token_id=tok.pad_token_id, **stop_kw)

    ceiling = common.matmul_ceiling(size, dtype=dtype, device=device)
    dims = common.model_dims(model)
    r1, hf = [], []
    for rep in range(args.repeats):  # alternate so that drifting load hits both sides alike
        r1.append(run_r1lab(engine, prompts, params(args.seed + 1000 + rep), args.n, device))
        hf.append(run_hf(model, enc, args.n, args.max_new_tokens, stop_kw, tok, args.seed + 1000 + rep, device))
    ceiling = max(ceiling, common.matmul_ceiling(size, dtype=dtype, device=device))  # best of before and after

    def summarise(name, runs):
        tps = [sum(r["lengths"]) / r["sec"] for r in runs]
        flops = []
        for r in runs:
            # useful work: each distinct prompt prefilled once + every real generated token
            spans = [(0, len(p)) for p in prompt_ids]
            spans += [(len(prompt_ids[i // args.n]), len(prompt_ids[i // args.n]) + n) for i, n in enumerate(r["lengths"])]
            flops.append(common.forward_flops(dims, spans) / r["sec"])
        return {
            "engine": name,
            "sec": common.median([r["sec"] for r in runs]),
            "tokens": common.median([sum(r["lengths"]) for r in runs]),
            "mean_len": common.median([sum(r["lengths"]) / len(r["lengths"]) for r in runs]),
            "tokens_per_s": common.median(tps),
            "gflops": common.median(flops) / 1e9,
            "mfu": common.median(flops) / ceiling,
            "all_tokens_per_s": tps,
        }

    rows = [summarise("r1lab HFEngine.generate", r1), summarise("hf model.generate", hf)]
    ratio = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    print(f"model {path}: {dims['params']:,} params, P_mm {dims['matmul_params']:,}; "
          f"{args.prompts} prompts x {args.n} samples, max_new_tokens {args.max_new_tokens}, "
          f"{device} {str(dtype).replace('torch.', '')}, {threads} threads, median of {args.repeats}")
    print(f"matmul ceiling ({size}^3 {str(dtype).replace('torch.', '')}, best of tries): {ceiling / 1e9:.1f} GFLOP/s")
    common.print_table(rows, [("engine", "engine", "s"), ("sec", "s/call", ".3f"), ("tokens", "tokens", ".0f"),
                              ("mean_len", "mean len", ".1f"), ("tokens_per_s", "tokens/s", ".1f"),
                              ("gflops", "GFLOP/s", ".3f"), ("mfu", "of ceiling", ".4%")])
    common.print_json("rollout", {
        "args": vars(args), "model": path, "dims": dims, "ceiling_flops": ceiling, "machine": common.machine(),
        "stop_kwargs_hf": {k: v for k, v in stop_kw.items() if k != "tokenizer"},
        "r1lab": rows[0], "hf": rows[1], "ratio_tokens_per_s": ratio,
    })
    common.print_ratio("r1lab/hf tokens_per_s", ratio)


if __name__ == "__main__":
    sys.exit(main())
