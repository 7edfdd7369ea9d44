"""GRPO step time of a randomly initialised Qwen2 at a given size: rollout + update, one run.

    python bench/step_time.py --preset 0.5b --device cuda      # Qwen2-0.5B's shape, bf16, on a GPU
    python bench/step_time.py --preset tiny --prompts 2 --group 4 --max-new-tokens 16 --repeats 1   # smoke run

What it measures, after one untimed warm-up step: the seconds of (1) a rollout of
``--prompts`` Countdown prompts × ``--group`` samples through ``HFEngine.generate`` (up to
``--max-new-tokens``; a random model rarely stops early, so most rows run to the limit) and
(2) one GRPO optimizer step over a batch of the same shape (``rl.update.update_minibatch``: the
loss passes, backward, clipping and AdamW, as in ``bench/update.py``), median of
``--repeats``; generated tokens per second; peak memory (CUDA: max allocated; CPU: peak RSS).

Presets (Qwen2 configs, random weights, the shipped tokenizer's ids):
  0.5b  Qwen2-0.5B's shape: hidden 896, 24 layers, 14 heads (2 KV), MLP 4864, vocab 151,936
        (tied embeddings) — 494M parameters
  tiny  the shipped base's shape (r1lab.models.tiny_config), for smoke runs on a CPU

Last line: ``ratio update/rollout sec: X.XXx`` (how the step splits; the absolute seconds are
in the table above it).
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
from types import SimpleNamespace

import common
import torch
from update import make_batch

from r1lab.engine.rollout import HFEngine, SamplingParams
from r1lab.models import (
    dtype_kwarg,
    load_tokenizer,
    pad_id,
    pick_device,
    resolve_dtype,
    resolve_model,
    tiny_config,
)
from r1lab.rl.learner import Learner
from r1lab.rl.settings import RLSettings
from r1lab.rl.update import RolloutBatch, update_minibatch
from r1lab.tasks import get_task

PRESETS = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True),
    "tiny": {},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="0.5b", choices=sorted(PRESETS))
    common.add_device_args(p, ceiling=False)
    p.add_argument("--prompts", type=int, default=16, help="B")
    p.add_argument("--group", type=int, default=16, help="G")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=64)
    p.add_argument("--micro-batch-tokens", type=int, default=16384, help="padded tokens per loss pass")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    common.quiet()
    threads = common.set_threads(args.threads)
    device = pick_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(resolve_model(""))
    torch.manual_seed(args.seed)
    shape = dict(PRESETS[args.preset])
    cfg = tiny_config(shape.pop("vocab_size", len(tok)), **shape)
    model = AutoModelForCausalLM.from_config(cfg, **dtype_kwarg(dtype), attn_implementation="sdpa").to(device)
    params = sum(p.numel() for p in model.parameters())
    task = get_task("countdown")
    examples = task.examples("train")
    prompts = [task.prompt(examples[i], tok) for i in random.Random(args.seed).sample(range(len(examples)), args.prompts)]
    engine = HFEngine(model, tok, max_batch=args.prompts * args.group)
    batch_args = SimpleNamespace(sequences=args.prompts * args.group, group=args.group, min_len=args.max_new_tokens // 2,
                                 max_len=args.max_new_tokens, micro_batch=args.micro_batch, seed=args.seed)
    samples, pk, old, adv = make_batch(batch_args, tok, model, device)
    adv = adv.to(device)
    mask, mb = pk.mask.clone(), torch.arange(len(samples), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-7, betas=(0.9, 0.99), weight_decay=0.0)
    settings = RLSettings(micro_batch=args.micro_batch, micro_batch_tokens=args.micro_batch_tokens, lr=1e-7,
                          warmup=0, norm="token", beta=0.0, max_new_tokens=args.max_new_tokens,
                          prompts_per_step=args.prompts, group_size=args.group)
    learner = Learner(model, opt, pad_id(tok))
    batch = RolloutBatch(pk, mask, old, None, adv)

    def rollout(seed):
        sp = SamplingParams(args.max_new_tokens, 1.0, 1.0, 0, ("</answer>",), seed=seed)
        return common.timed(lambda: engine.generate(prompts, sp, n=args.group), device)

    def update():
        model.train()
        sec, ok = common.timed(lambda: update_minibatch(batch, mb, learner, settings, 1e-7, {}), device)
        if not ok:
            raise RuntimeError("update skipped (non-finite loss)")
        return sec

    rollout(0)
    update()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    r_sec, u_sec, toks = [], [], []
    for rep in range(args.repeats):
        sec, out = rollout(1 + rep)
        r_sec.append(sec)
        toks.append(sum(len(s.completion_ids) for s in out.samples))
        u_sec.append(update())
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    row = {"preset": args.preset, "params_m": params / 1e6, "rollout": common.median(r_sec),
           "gen_tok_s": common.median([t / s for t, s in zip(toks, r_sec)]), "update": common.median(u_sec),
           "step": common.median(r_sec) + common.median(u_sec), "peak_mib": peak}
    print(f"{args.preset}: {params:,} parameters, {device} {str(dtype).replace('torch.', '')}, {threads} threads; "
          f"{args.prompts} prompts x {args.group}, max_new_tokens {args.max_new_tokens}; update over "
          f"{len(samples)} sequences ({int(mask.sum())} completion tokens); median of {args.repeats}")
    common.print_table([row], [("preset", "preset", "s"), ("params_m", "M params", ".1f"), ("rollout", "rollout s", ".2f"),
                               ("gen_tok_s", "gen tok/s", ".0f"), ("update", "update s", ".2f"), ("step", "step s", ".2f"),
                               ("peak_mib", "peak MiB", ".0f")])
    common.print_json("step_time", {"args": vars(args), "machine": common.machine(), **row,
                                    "all_rollout_sec": r_sec, "all_update_sec": u_sec})
    common.print_ratio("update/rollout sec", row["update"] / row["rollout"])


if __name__ == "__main__":
    sys.exit(main())
