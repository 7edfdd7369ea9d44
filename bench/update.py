"""Policy-update speed: r1lab's length-bucketed token-budget micro-batches vs one padded batch, one run.

    python bench/update.py                        # shipped base, 256 sequences, completions 20..160 tokens
    python bench/update.py --sequences 32 --group 8 --max-len 64 --repeats 1   # a smoke run

What it measures: one GRPO optimizer step exactly as ``r1lab zero`` does it, by calling
``r1lab.rl.update.update_minibatch`` (per micro-batch: ``batch.trim`` ->
``row_logprobs`` -> ``grpo.policy_loss``
(DAPO token norm, ε 0.2/0.28, β 0) -> weighted ``backward``; then grad-norm clipping and an
AdamW step) on a packed batch of ``--sequences`` sequences: real Countdown prompts (short
template, ≈15 tokens), G = ``--group`` completions each, completion lengths uniform in
[``--min-len``, ``--max-len``] (random token ids; π_old = the model's own log-probs, so the
ratio starts at 1 as with μ = 1). Reported: completion tokens per second (the tokens that
carry gradient), real tokens per second (prompt + completion), tokens actually pushed through
the model including padding, and achieved training FLOP/s as a fraction of a fp32 matmul
ceiling measured in the same run. Training FLOPs ≈ 3 × forward, over real tokens only:
Σ_tokens [6·P_mm + 12·layers·d·context] (see ``common.py``). Median of ``--repeats`` timed
steps per variant; variants alternate; one untimed warm-up step each.

Variants (they differ only in how rows are grouped into forward passes and whether the
prompts run once per group):
  bucketed  r1lab's default: ``micro_batches(n, micro_batch, lengths, micro_batch_tokens)``
            sorts rows by length and cuts them into micro-batches of at most ``--micro-batch``
            rows (64) and ``--micro-batch-tokens`` padded tokens (2048), zero's defaults;
            ``trim`` cuts each micro-batch's shared right padding; each distinct prompt runs
            once per step and its G completions attend to its keys (``fasttrain``,
            ``shared_prompt``).
  plain     the same micro-batches through the model's own forward over prompt + completion
            (``shared_prompt=False``). Shows what the shared prompt buys.
  unsorted  plain forward, micro-batches of ``--micro-batch`` rows in group order (no length
            sort, no token budget), still trimmed (``pk.lengths`` is replaced by −row index so
            that ``micro_batches`` keeps the order). Shows what sorting and the budget buy.
  padded    the reference: one plain forward/backward over all rows padded to the longest
            sequence (micro_batch = sequences).

Held equal: model and weights (fp32, sdpa, train mode), the batch, the loss and its
normalisation (gradients agree up to float rounding), the optimizer (AdamW β (0.9, 0.99),
as zero), clipping, threads. Last line: ``ratio bucketed/padded completion_tokens_per_s: X.XXx``.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import resource
import sys

import common
import torch

from r1lab.engine.rollout import Sample
from r1lab.models import load_model, load_tokenizer, pad_id, pick_device, resolve_model
from r1lab.rl.grpo import group_advantages
from r1lab.rl.learner import Learner
from r1lab.rl.settings import RLSettings
from r1lab.rl.update import RolloutBatch, update_minibatch
from r1lab.tasks import get_task
from r1lab.train.batch import completion_logprobs, micro_batches, pack, trim

VARIANTS = ("bucketed", "plain", "unsorted", "padded")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="model dir or hub id ('' = r1lab's shipped base)")
    p.add_argument("--sequences", type=int, default=256, help="N = B·G sequences in the batch")
    p.add_argument("--group", type=int, default=16, help="G: completions per prompt")
    p.add_argument("--min-len", type=int, default=20, help="shortest completion (tokens)")
    p.add_argument("--max-len", type=int, default=160, help="longest completion (tokens)")
    p.add_argument("--micro-batch", type=int, default=64, help="rows per forward/backward (zero's default)")
    p.add_argument("--micro-batch-tokens", type=int, default=2048, help="padded tokens per forward/backward "
                   "(bucketed variant; zero's default)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of " + " | ".join(VARIANTS))
    p.add_argument("--repeats", type=int, default=3, help="timed steps per variant (median reported)")
    p.add_argument("--lr", type=float, default=1e-6, help="small, so that the weights barely move between steps")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores of this process)")
    p.add_argument("--system-malloc", action="store_true",
                   help="glibc's default allocator settings (default: freed memory kept, as r1lab's commands do)")
    common.add_device_args(p)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.sequences % args.group:
        p.error(f"--sequences {args.sequences} does not split into groups of {args.group}")
    bad = [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {bad}; choose from {VARIANTS}")
    if not 1 <= args.min_len <= args.max_len:
        p.error(f"need 1 <= --min-len ({args.min_len}) <= --max-len ({args.max_len})")
    return args


def make_batch(args, tok, model, device="cpu"):
    """Packed batch of real prompts + random completions, π_old from the model, advantages."""
    rng = random.Random(args.seed)
    task = get_task("countdown")
    examples = task.examples("train")
    b = args.sequences // args.group
    prompts = [tok(task.prompt(examples[i], tok), add_special_tokens=False)["input_ids"]
               for i in rng.sample(range(len(examples)), b)]
    vocab = list(range(2, len(tok)))  # no EOS / pad inside completions
    samples = []
    for i in range(args.sequences):
        n = rng.randint(args.min_len, args.max_len)
        samples.append(Sample(prompts[i // args.group], [rng.choice(vocab) for _ in range(n)], [0.0] * n, "", "stop"))
    pk = pack(samples, pad_id(tok), device)
    old = torch.zeros_like(pk.mask)
    with torch.no_grad():  # π_old = the policy's own log-probs (as recompute_old_logp would)
        for rows in micro_batches(args.sequences, args.micro_batch, pk.lengths):
            ids, t = trim(pk.input_ids, rows, pk.start, pk.mask)
            old[rows, :t] = completion_logprobs(model, ids, pk.start)[0]
    old = old * pk.mask
    rewards = torch.tensor([rng.choice([0.0, 0.1, 1.1]) for _ in range(args.sequences)])
    adv = group_advantages(rewards, args.group)
    return samples, pk, old, adv


def processed_tokens(pk, micro: int, lengths, max_tokens: int) -> int:
    """Token positions the model actually runs on (padding included) for one variant."""
    total = 0
    for rows in micro_batches(pk.input_ids.shape[0], micro, lengths, max_tokens, pk.start):
        ids, _ = trim(pk.input_ids, rows, pk.start, pk.mask)
        total += ids.numel()
    return total


def main(argv=None) -> None:
    args = parse_args(argv)
    common.quiet()
    common.warn_if_busy()
    threads = common.set_threads(args.threads, reuse_memory=not args.system_malloc)
    torch.manual_seed(args.seed)
    path = resolve_model(args.model)
    tok = load_tokenizer(path)
    device = pick_device(args.device)
    model = load_model(path, dtype=args.dtype, device=device).train()
    dtype = next(model.parameters()).dtype
    size = common.ceiling_side(args, device)
    samples, pk, old, adv = make_batch(args, tok, model, device)
    adv = adv.to(device)
    n = args.sequences
    mask = pk.mask.clone()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)

    learner = Learner(model, opt, pad_id(tok))

    def context(micro: int, tokens: int = 0, shared: bool = False) -> RLSettings:
        return RLSettings(micro_batch=micro, micro_batch_tokens=tokens, lr=args.lr, warmup=0, norm="token", beta=0.0,
                          eps_low=0.2, eps_high=0.28, max_new_tokens=args.max_len, prompts_per_step=n // args.group,
                          group_size=args.group, shared_prompt=shared)

    in_order = -torch.arange(n, device=device)  # descending sort of −index = the original row order
    setups = {
        "bucketed": (context(args.micro_batch, args.micro_batch_tokens, shared=True), pk),
        "plain": (context(args.micro_batch, args.micro_batch_tokens), pk),
        "unsorted": (context(args.micro_batch), dataclasses.replace(pk, lengths=in_order)),
        "padded": (context(n), pk),
    }
    names = args.variants.split(",")
    mb = torch.arange(n, device=device)

    faults = {name: [] for name in names}  # minor page faults per update (first touches of fresh memory)

    def step(name):
        settings, packed = setups[name]
        agg: dict = {}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        sec, ok = common.timed(lambda: update_minibatch(RolloutBatch(packed, mask, old, None, adv), mb, learner, settings, args.lr, agg),
                                device)
        faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        if not ok:
            raise RuntimeError(f"{name}: update skipped (non-finite loss)")
        return sec, agg

    for name in names:  # warm-up: optimizer state, allocator, thread pool
        step(name)
    ceiling = common.matmul_ceiling(size, dtype=dtype, device=device)
    times = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            times[name].append(step(name)[0])
    ceiling = max(ceiling, common.matmul_ceiling(size, dtype=dtype, device=device))

    dims = common.model_dims(model)
    comp_tokens = int(pk.mask.sum())
    real_tokens = sum(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    flops = 3.0 * common.forward_flops(dims, [(0, len(s.prompt_ids) + len(s.completion_ids)) for s in samples])
    rows = []
    for name in names:
        settings, packed = setups[name]
        sec = common.median(times[name])
        processed = processed_tokens(packed, settings.micro_batch, packed.lengths, settings.micro_batch_tokens)
        rows.append({
            "variant": name, "micro_batch": settings.micro_batch, "sec": sec, "all_sec": times[name],
            "completion_tokens_per_s": comp_tokens / sec, "real_tokens_per_s": real_tokens / sec,
            "processed_tokens": processed, "padding_overhead": processed / real_tokens,
            "gflops": flops / sec / 1e9, "mfu": flops / sec / ceiling,
            "page_faults": common.median(faults[name][1:]),  # timed steps only (the first is the warm-up)
        })
    by = {r["variant"]: r for r in rows}
    prompt_lens = [len(s.prompt_ids) for s in samples]
    print(f"model {path}: {dims['params']:,} params; {n} sequences (G {args.group}), prompts "
          f"{min(prompt_lens)}..{max(prompt_lens)} tokens, completions {args.min_len}..{args.max_len} "
          f"({comp_tokens} completion / {real_tokens} real tokens); {device} {str(dtype).replace('torch.', '')}, {threads} threads, median of {args.repeats}")
    print(f"matmul ceiling ({size}^3 {str(dtype).replace('torch.', '')}, best of tries): {ceiling / 1e9:.1f} GFLOP/s; "
          f"training FLOPs of the batch: {flops / 1e9:.2f} GFLOP")
    common.print_table(rows, [("variant", "variant", "s"), ("micro_batch", "micro", "d"), ("sec", "s/step", ".3f"),
                              ("completion_tokens_per_s", "compl tok/s", ".0f"), ("real_tokens_per_s", "real tok/s", ".0f"),
                              ("processed_tokens", "tokens run", "d"), ("padding_overhead", "run/real", ".2f"),
                              ("gflops", "GFLOP/s", ".2f"), ("mfu", "of ceiling", ".2%"),
                              ("page_faults", "faults", ".0f")])
    ratio = None
    if "bucketed" in by and "padded" in by:
        ratio = by["bucketed"]["completion_tokens_per_s"] / by["padded"]["completion_tokens_per_s"]
    common.print_json("update", {
        "args": vars(args), "model": path, "dims": dims, "ceiling_flops": ceiling, "machine": common.machine(),
        "completion_tokens": comp_tokens, "real_tokens": real_tokens, "train_flops": flops,
        "variants": by, "ratio_bucketed_over_padded": ratio,
    })
    if ratio is None:
        first, second = rows[0], rows[-1]
        common.print_ratio(f"{first['variant']}/{second['variant']} completion_tokens_per_s",
                           first["completion_tokens_per_s"] / second["completion_tokens_per_s"])
    else:
        common.print_ratio("bucketed/padded completion_tokens_per_s", ratio)


if __name__ == "__main__":
    sys.exit(main())
