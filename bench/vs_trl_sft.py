"""SFT: r1lab's ``sft_step`` vs TRL's ``SFTTrainer``, same model, rows, lengths, step size and optimizer.

    pip install 'trl>=0.14'        # benchmark-only extra (r1lab[bench]); measured with trl 1.16.0
    python bench/vs_trl_sft.py     # shipped base, 4096 countdown demonstrations, 64 rows/step, 16 warm-up steps + the rest of one epoch
    python bench/vs_trl_sft.py --pool 2048 --warmup 1   # sessions 10-14's setting: first-step costs included
    python bench/vs_trl_sft.py --rows 8 --pool 64 --steps 2 --repeats 1 --trl-micro-batch 4   # a smoke run

What it measures: training tokens per second (real prompt + response tokens of a step, padding
not counted, over the step's wall time: collate -> forward -> response-only loss -> backward ->
clip -> AdamW step), seconds per optimizer step and peak resident memory of each side. Each side
runs in its own subprocess (``--side``), so the peak RSS (getrusage ru_maxrss of that process and
its children) is its own; ``--repeats`` processes per side, alternating r1lab / TRL; reported: the
median over processes of each process's tokens / step time over its timed steps, after
``--warmup`` untimed steps (at least 1). The RSS when the first step starts (model, rows, imports
loaded; no optimizer state yet) is shown as well, so the training part of the peak can be told
from what each library costs to import.

Step time: r1lab: the loop body of ``train.sft_loop.fit`` timed directly, step by step: the step's
rows -> ``train.sft.sft_step`` (micro-batching, collation, forward/backward, clipping, AdamW) over
the plan of ``train.sft.batches``. ``fit`` itself is not timed: its ``tokens_per_s`` is cumulative
from before the first (warm-up) step, and around the steps it does held-out evaluation, a
metrics.jsonl line and tqdm per step, checkpoints and the final save, none of which TRL does here.
TRL: the time between consecutive ``on_step_end`` callbacks, which covers the batch fetch and
collation of ``get_batch_samples`` (the span ``on_step_begin`` -> ``on_step_end`` would leave it out,
while r1lab's step includes its collation), the forward/backward of every micro-batch, clipping,
the optimizer and scheduler steps, and the (idle) log/save check.

Held equal (r1lab sft_step ⇔ TRL SFTConfig):
  model          the same directory loaded the same way (``r1lab.models.load_model``: fp32, sdpa, CPU)
                 on both, torch threads = cores (``--threads``), ``torch.manual_seed(seed)``
  rows           ``--pool`` rows: countdown train prompts (short template, ``task.prompt``) with
                 ``task.demonstration`` responses (worked attempt-check-retry solutions); the same
                 strings on both sides ⇔ a ``datasets.Dataset`` of {"prompt", "completion"}. The
                 token ids are the same: r1lab tokenizes prompt and response + EOS apart, TRL the
                 prompt and prompt + completion + EOS; checked at start (the shipped tokenizer adds
                 no special tokens and merges nothing across the boundary)
  loss           response tokens only, token mean over the whole optimizer step (r1lab's
                 normalisation ⇔ completion_only_loss=True with TRL's num_items_in_batch over the
                 accumulated micro-batches); loss_type "nll"
  length         ``--max-len`` ⇔ max_length; no row is longer (r1lab drops longer rows before both
                 sides get them), so nothing is truncated on either side
  step size      the same real tokens per optimizer step on average. TRL's step is a fixed
                 ``--rows`` R rows (per_device_train_batch_size = ``--trl-micro-batch`` m,
                 gradient_accumulation_steps = R / m), i.e. R · mean length tokens on average.
                 r1lab's step is a token budget (tokens_per_step): ``batches`` fills a step with
                 length-sorted rows and closes it before the row that would overflow it, so a
                 budget of exactly R · mean falls short by about half a row a step and makes one
                 step more per epoch (pool 2048: 33 steps of 4342 tokens, not 32 of 4478). The
                 budget used is the smallest whose epoch plan over the pool averages at least
                 R · mean tokens per step (pool 2048: 4513; 4096: 4560): both sides then cut the pool into the
                 same pool / R steps of the same mean size. Measured tokens and rows per step
                 of each side are printed
  timed rows     ``--steps 0`` (default): every step of one epoch over the pool after the warm-up,
                 on both sides: the same rows, less one warm-up step's each
  optimizer      AdamW lr ``--lr``, betas (0.9, 0.95) (as ``fit``), eps 1e-8, weight decay
                 ``--weight-decay`` (0: TRL exempts biases and norms from decay, r1lab does not),
                 constant lr, no warm-up, grad clip 1.0 ⇔ optim="adamw_torch", adam_beta1=0.9,
                 adam_beta2=0.95, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0
  no packing     rows are right-padded and never attend to each other on either side
                 (packing=False, padding_free=False: TRL documents padding-free for FlashAttention
                 only, which a CPU does not have)
  allocator      both processes keep freed memory for reuse (glibc mallopt, ``r1lab.runtime``), as
                 r1lab's commands do by default; ``--system-malloc`` runs both with glibc's defaults

Precision (``--precisions``): each side runs in fp32 and in bf16 mixed precision (weights and
AdamW fp32, matmuls bf16 under autocast: TRL bf16=True, SFTConfig's default, via accelerate's CPU
autocast; r1lab ``--precision bf16``, which keeps attention, norms and the loss in fp32, since
bf16 attention's backward is slower than fp32's on this CPU). Same-precision ratios are printed,
and the last line compares each side's fastest, so neither is held to a setting that is slow for
it. TRL's other settings at its best on CPU: use_cpu=True, fp16=False, gradient_checkpointing=False (SFTConfig defaults it to True; and
activation_checkpointing=False where that field exists), dataloader_num_workers=0,
report_to="none", save_strategy="no", logging_steps larger than the run, disable_tqdm=True,
torch.set_num_threads(cores), train_sampling_strategy="group_by_length" (``--trl-sampling``;
TRL's analogue of r1lab's length bucketing: the Trainer's LengthGroupedSampler sorts
megabatches of up to 50 steps' rows by length, so micro-batches pad little) and micro-batches of
8 rows (``--trl-micro-batch``). Measured at smoke size only (2-core dev machine while another
job held both cores, ``--threads 1``, R = 32 rows/step, one process, tokens/s, noisy: ±10%):
  pool 512, 1 + 4 steps:   group_by_length m=8 4345 (pad 5%), m=16 4019 (11%), m=32 3815 (22%);
                           random sampling m=16 2216 (pad 51%); r1lab 4518 / 4667
  pool 320, 1 + 9 steps:   group_by_length m=4 4036 (pad 4%), m=8 4655 / 4568 (9%), m=16 3868 (20%);
                           r1lab micro_batch_tokens 4096: 4613 / 4784 (pad 9%), 2048: 4875 (6%)
Random sampling pads half of every micro-batch (rows of 36-152 tokens), so it is not TRL's best;
m=8 is the fastest TRL micro-batch (m=4 pays more per-pass overhead than padding it saves).
r1lab's side: its defaults (``SFTSettings``: micro_batch_tokens 2048, i.e. length-sorted
micro-batches of at most 2048 padded tokens; length buckets of 64 steps' rows). Session 15 (quiet
VM, 2 threads, one process each): fp32 12,358 tok/s at peak 698 MiB with 2048 against 11,861 at
798 MiB with 4096; bf16 15,193 / 642 MiB against 13,317 / 794 MiB, so 2048 became the default.
Under bf16 the per-token layers run on a row count rounded up to 256 (``train.fasttrain.ROW_GRID``:
oneDNN builds a kernel for every new matmul shape). TRL's ``--trl-pad-multiple`` does the same
for its side (pad_to_multiple_of): session 15, m=8, pad 16: bf16 7,521 tok/s at 948 MiB, fp32
7,236 at 750 MiB; without it bf16 5,373 at 1,966 MiB, fp32 7,380 at 748 MiB (one process each).

Not equal, by design: which rows land in which step (r1lab: seeded shuffle, length-sorted
chunks of 64 steps' rows — the whole default pool —, steps shuffled; TRL: random megabatches of
min(50, pool / 4R) steps' rows, each sorted by length): each side groups rows its own way, so
tokens/s, not s/step, is the number to compare; with ``--steps N`` the timed steps are
different draws from the pool (use enough of them). TRL's loss goes through its fused, chunked LM head
(log-probs without full logits) and computes entropy and token accuracy for its metrics; TRL
passes an attention mask, r1lab does not need one (right padding under a causal mask). The
mean loss of the timed steps of each side is printed as a check that both train the same
objective.

Last line: ``ratio r1lab/trl tokens_per_s: X.XXx`` (r1lab's tokens/s over TRL's).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="model dir or hub id ('' = r1lab's shipped base)")
    p.add_argument("--rows", type=int, default=64, help="R: rows per optimizer step (TRL); r1lab's token budget "
                   "is set to match R · mean length")
    p.add_argument("--pool", type=int, default=4096, help="rows in the data set both sides sample their steps from")
    p.add_argument("--max-len", type=int, default=1024, help="longest prompt + response (max_length)")
    p.add_argument("--steps", type=int, default=0, help="timed steps per process (0 = the rest of one epoch of "
                   "--pool after the warm-up: both sides then time nearly the same rows)")
    p.add_argument("--warmup", type=int, default=16, help="untimed steps first (>= 1); 16 (session 15): the steady "
                   "state, after r1lab's bf16 kernels for each row count are built (1 step: 1.63x instead of 2.19x)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--repeats", type=int, default=3, help="processes per side (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores of this process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--micro-batch-tokens", type=int, default=2048, help="r1lab: padded tokens per forward/backward "
                   "(SFTSettings default)")
    p.add_argument("--trl-micro-batch", type=int, default=8,
                   help="TRL per_device_train_batch_size (gradient accumulation makes up --rows; 0 = --rows, one "
                        "pass); 8 was the fastest measured (module docstring)")
    p.add_argument("--trl-pad-multiple", type=int, default=0,
                   help="TRL: pad_to_multiple_of (0 = none); under bf16 it bounds oneDNN's distinct matmul shapes")
    p.add_argument("--trl-sampling", default="group_by_length", choices=["group_by_length", "random"],
                   help="TRL train_sampling_strategy")
    p.add_argument("--sides", default="r1lab,trl", help="which sides to run")
    p.add_argument("--precisions", default="fp32,bf16",
                   help="each side at each: fp32, and/or bf16 mixed precision (r1lab: --precision bf16; TRL: bf16=True, "
                        "its SFTConfig default); the last line compares each side's fastest")
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)  # internal: this child's precision
    p.add_argument("--system-malloc", action="store_true",
                   help="both sides with glibc's default allocator settings (default: both keep freed memory, "
                        "r1lab.runtime.keep_freed_memory, as r1lab's commands do)")
    p.add_argument("--side", default="", help=argparse.SUPPRESS)  # internal: run one side here
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 0 or args.rows < 1:
        p.error("--warmup and --rows must be >= 1 (TRL's first timed step is measured from the end of a warm-up "
                "step), --steps >= 0")
    if args.pool < args.rows * (args.warmup + max(args.steps, 1)):
        p.error(f"--pool {args.pool} must hold at least --rows × (--warmup + --steps) = "
                f"{args.rows * (args.warmup + max(args.steps, 1))} rows (one epoch on TRL's side)")
    return args


def peak_rss_mib() -> float:
    """Peak resident memory of this process and of its waited-for children (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def rss_mib() -> float | None:
    """Current resident memory of this process (Linux /proc), None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def sft_rows(args, tok) -> list[dict]:
    """``--pool`` prompt/response rows: countdown train prompts with worked demonstrations, none
    longer than ``--max-len`` tokens (the same rows, in this order, on both sides)."""
    from r1lab.tasks import get_task
    from r1lab.train.sft import tokenize

    task = get_task("countdown")
    rng = random.Random(f"vs-trl-sft-{args.seed}")
    rows = []
    for ex in task.examples("train"):
        response = task.demonstration(ex, rng)
        if response is None:
            continue
        row = {"prompt": task.prompt(ex, tok), "response": response}
        if tokenize([row], tok, "raw", args.max_len)[0]:
            rows.append(row)
        if len(rows) == args.pool:
            return rows
    raise SystemExit(f"countdown's train split gave only {len(rows)} rows within {args.max_len} tokens; "
                     f"lower --pool")


def r1lab_budget(examples, rows: int, seed: int) -> int:
    """The smallest tokens_per_step whose epoch-0 plan averages at least ``rows`` · mean length real
    tokens per step (see the module docstring: step size)."""
    from r1lab.train.sft import batches

    total = sum(e.length for e in examples)
    target = rows * total / len(examples)
    budget = int(target)
    while total / len(batches(examples, budget, seed, 0)) < target:
        budget += 1
    return budget


# --------------------------------------------------------------------------------------------
# r1lab side
# --------------------------------------------------------------------------------------------


def side_r1lab(args, path: str, workdir: Path) -> dict:
    import torch

    from r1lab.models import load_model, load_tokenizer, pad_id
    from r1lab.train.sft import batches, micro_batches, sft_step, tokenize

    tok = load_tokenizer(path)
    examples, _ = tokenize(sft_rows(args, tok), tok, "raw", args.max_len)
    budget = r1lab_budget(examples, args.rows, args.seed)
    plan = batches(examples, budget, args.seed, 0)
    need = args.warmup + args.steps if args.steps else max(len(plan), args.warmup + 1)
    epoch = 1
    while len(plan) < need:  # as fit plans its epochs
        plan += batches(examples, budget, args.seed, epoch)
        epoch += 1
    torch.manual_seed(args.seed)
    model = load_model(path, device="cpu").train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    pid = pad_id(tok)
    rss_start = rss_mib()
    out: dict = {"step_sec": [], "tokens": [], "padded_tokens": [], "rows": [], "loss": []}
    for k in range(need):
        t = time.perf_counter()
        step_rows = [examples[i] for i in plan[k]]
        st = sft_step(model, opt, step_rows, pid, args.lr, args.micro_batch_tokens, 1.0, bf16=args.precision == "bf16")
        dt = time.perf_counter() - t
        if k < args.warmup:
            continue
        out["step_sec"].append(dt)
        out["tokens"].append(sum(e.length for e in step_rows))
        out["padded_tokens"].append(sum(len(mb) * max(e.length for e in mb)
                                        for mb in micro_batches(step_rows, args.micro_batch_tokens)))
        out["rows"].append(len(step_rows))
        out["loss"].append(st["loss"])
    out.update(tokens_per_step_budget=budget, rss_start_mib=rss_start)
    return out


# --------------------------------------------------------------------------------------------
# TRL side
# --------------------------------------------------------------------------------------------


def trl_steps(args) -> int:
    """Optimizer steps TRL runs: warm-up + timed, or (``--steps 0``) the full steps of one epoch."""
    return args.warmup + args.steps if args.steps else args.pool // args.rows


def side_trl(args, path: str, workdir: Path) -> dict:
    import torch
    import trl
    from datasets import Dataset, disable_progress_bars
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from r1lab.models import load_model, load_tokenizer
    from r1lab.train.sft import tokenize

    disable_progress_bars()
    tok = load_tokenizer(path)
    rows = sft_rows(args, tok)
    ours, _ = tokenize(rows, tok, "raw", args.max_len)
    for row, ex in zip(rows[:64], ours):  # TRL: tokenizer(prompt), tokenizer(prompt + completion + EOS)
        p = tok(row["prompt"])["input_ids"]
        pc = tok(row["prompt"] + row["response"] + tok.eos_token)["input_ids"]
        if p != ex.prompt_ids or pc != ex.prompt_ids + ex.response_ids:
            raise SystemExit("TRL and r1lab would tokenize the rows differently (special tokens, or a merge "
                             "across the prompt/response boundary)")
    data = Dataset.from_dict({"prompt": [r["prompt"] for r in rows], "completion": [r["response"] for r in rows]})

    mb = args.trl_micro_batch or args.rows
    if args.rows % mb:
        raise SystemExit(f"--trl-micro-batch {mb} must divide --rows {args.rows}")
    no_ckpt = {"gradient_checkpointing": False}  # SFTConfig defaults it to True
    if "activation_checkpointing" in SFTConfig.__dataclass_fields__:  # its new name (transformers >= 5.2x)
        no_ckpt["activation_checkpointing"] = False
    cfg = SFTConfig(
        output_dir=str(workdir / "trl"),
        use_cpu=True, bf16=args.precision == "bf16", fp16=False, **no_ckpt,
        per_device_train_batch_size=mb, gradient_accumulation_steps=args.rows // mb,
        max_length=args.max_len, completion_only_loss=True, packing=False, padding_free=False,
        pad_to_multiple_of=args.trl_pad_multiple or None,
        train_sampling_strategy=args.trl_sampling,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch",
        adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, weight_decay=args.weight_decay, max_grad_norm=1.0,
        max_steps=trl_steps(args), dataloader_num_workers=0,
        logging_steps=10**6, report_to="none", save_strategy="no", disable_tqdm=True, seed=args.seed,
    )

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.rss_start: float | None = None

        def on_step_begin(self, a, state, control, **kw):
            if self.rss_start is None:
                self.rss_start = rss_mib()

        def on_step_end(self, a, state, control, **kw):
            self.ends.append(time.perf_counter())

    counts: list[list[float]] = []  # per micro-batch: real tokens, padded tokens, rows, loss share

    class Counted(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            real = float(inputs["attention_mask"].sum())
            padded = float(inputs["input_ids"].numel())
            loss = super().training_step(model, inputs, num_items_in_batch)
            counts.append([real, padded, float(inputs["input_ids"].shape[0]), float(loss)])
            return loss

    torch.manual_seed(args.seed)
    model = load_model(path, device="cpu")
    timer = StepTimer()
    trainer = Counted(model=model, args=cfg, train_dataset=data, processing_class=tok, callbacks=[timer])
    torch.set_num_threads(args.threads)  # after the trainer: nothing in its setup may change it
    m = trainer.model
    checkpointing = bool(m.is_activation_checkpointing if hasattr(type(m), "is_activation_checkpointing")
                         else getattr(m, "is_gradient_checkpointing", False))
    if (checkpointing or trainer.args.bf16 != (args.precision == "bf16") or trainer.args.fp16
            or trainer.accelerator.device.type != "cpu"):
        raise SystemExit(f"TRL is not at the intended settings: checkpointing {checkpointing}, bf16 "
                         f"{trainer.args.bf16}, fp16 {trainer.args.fp16}, device {trainer.accelerator.device}")
    if len(trainer.train_dataset) != len(rows):
        raise SystemExit(f"TRL kept {len(trainer.train_dataset)} of {len(rows)} rows")
    trainer.train()
    ga = args.rows // mb
    if len(timer.ends) != trl_steps(args) or len(counts) != ga * len(timer.ends):
        raise SystemExit(f"TRL ran {len(timer.ends)} steps of {len(counts)} micro-batches; expected "
                         f"{trl_steps(args)} of {ga}")
    w = args.warmup
    per_step = [counts[k * ga:(k + 1) * ga] for k in range(len(timer.ends))]
    return {
        "step_sec": [timer.ends[k] - timer.ends[k - 1] for k in range(w, len(timer.ends))],
        "tokens": [sum(c[0] for c in s) for s in per_step[w:]],
        "padded_tokens": [sum(c[1] for c in s) for s in per_step[w:]],
        "rows": [sum(c[2] for c in s) for s in per_step[w:]],
        "loss": [sum(c[3] for c in s) for s in per_step[w:]],
        "rss_start_mib": timer.rss_start,
        "trl_version": trl.__version__,
        "trl_micro_batch": mb,
    }


def child(args) -> None:
    common.quiet()
    args.threads = common.set_threads(args.threads, reuse_memory=not args.system_malloc)
    from r1lab.models import resolve_model

    path = resolve_model(args.model)
    with tempfile.TemporaryDirectory(prefix=f"r1lab-bench-sft-{args.side}-") as tmp:
        fn = side_r1lab if args.side == "r1lab" else side_trl
        out = fn(args, path, Path(tmp))
    out.update(side=args.side, peak_rss_mib=peak_rss_mib(), threads=args.threads)
    Path(args.result).write_text(json.dumps(out))


# --------------------------------------------------------------------------------------------
# parent: run the sides, summarise
# --------------------------------------------------------------------------------------------


def run_side(args, side: str, precision: str, log_dir: Path, rep: int) -> dict:
    result = log_dir / f"{side}-{precision}-{rep}.json"
    log = log_dir / f"{side}-{precision}-{rep}.log"
    cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--precision", precision, "--result", str(result),
           "--model", args.model, "--rows", str(args.rows), "--pool", str(args.pool), "--max-len", str(args.max_len),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--lr", str(args.lr),
           "--weight-decay", str(args.weight_decay), "--threads", str(args.threads), "--seed", str(args.seed),
           "--micro-batch-tokens", str(args.micro_batch_tokens), "--trl-micro-batch", str(args.trl_micro_batch),
           "--trl-sampling", args.trl_sampling, "--trl-pad-multiple", str(args.trl_pad_multiple)] + (["--system-malloc"] if args.system_malloc else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([common.ROOT, os.environ.get("PYTHONPATH", "")]))
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=common.ROOT)
    if proc.returncode != 0 or not result.is_file():
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{side} run {rep} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return json.loads(result.read_text())


def summarise(side: str, runs: list[dict]) -> dict:
    per_run_tps = [sum(r["tokens"]) / sum(r["step_sec"]) for r in runs]
    return {
        "side": side,
        "tokens_per_s": common.median(per_run_tps),
        "sec_per_step": common.median([common.median(r["step_sec"]) for r in runs]),
        "timed_steps": common.median([len(r["step_sec"]) for r in runs]),
        "timed_tokens": common.median([sum(r["tokens"]) for r in runs]),
        "tokens_per_step": common.median([sum(r["tokens"]) / len(r["tokens"]) for r in runs]),
        "rows_per_step": common.median([sum(r["rows"]) / len(r["rows"]) for r in runs]),
        "padding_pct": common.median([100.0 * (1 - sum(r["tokens"]) / sum(r["padded_tokens"])) for r in runs]),
        "loss": common.median([sum(r["loss"]) / len(r["loss"]) for r in runs]),
        "rss_start_mib": common.median([r["rss_start_mib"] or 0.0 for r in runs]),
        "peak_rss_mib": common.median([r["peak_rss_mib"] for r in runs]),
        "per_run_tokens_per_s": per_run_tps,
        "runs": runs,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.side:
        return child(args)
    common.quiet()
    common.warn_if_busy()
    args.threads = args.threads or common.default_threads()
    sides = args.sides.split(",")
    if "trl" in sides:
        try:
            import trl  # noqa: F401
        except ImportError:
            raise SystemExit("TRL is not installed: pip install 'trl>=0.14' (the [bench] extra)") from None
        try:
            from trl import SFTTrainer  # noqa: F401  (lazy in trl: a missing dependency shows only here)
        except Exception as exc:
            raise SystemExit(f"TRL {trl.__version__} is installed but its SFTTrainer does not import: {exc}") from None
    precisions = args.precisions.split(",")
    if not set(precisions) <= {"fp32", "bf16"}:
        raise SystemExit(f"--precisions: fp32 and/or bf16, not {args.precisions!r}")
    log_dir = Path(tempfile.mkdtemp(prefix="r1lab-bench-vs-trl-sft-"))
    arms = [(s, pr) for s in sides for pr in precisions]
    results: dict[str, list[dict]] = {f"{s} {pr}": [] for s, pr in arms}
    for rep in range(args.repeats):
        for side, pr in arms:
            results[f"{side} {pr}"].append(run_side(args, side, pr, log_dir, rep))
    rows = [summarise(s, results[s]) for s in results]
    by = {r["side"]: r for r in rows}
    trl_version = next((r.get("trl_version") for k, v in results.items() if k.startswith("trl") for r in v), None)
    budget = next((r.get("tokens_per_step_budget") for k, v in results.items() if k.startswith("r1lab") for r in v), None)
    timed = args.steps or "the rest of one epoch's"
    print(f"countdown demonstrations, pool {args.pool} rows, max_len {args.max_len}; {args.rows} rows/step (TRL: "
          f"micro-batch {args.trl_micro_batch or args.rows}, {args.trl_sampling}; r1lab: tokens_per_step {budget}, "
          f"micro_batch_tokens {args.micro_batch_tokens}); lr {args.lr}; {args.warmup} warm-up + {timed} "
          f"timed steps per process, median of {args.repeats} processes per side; {args.threads} threads; "
          f"trl {trl_version}; logs {log_dir}")
    common.print_table(rows, [("side", "side", "s"), ("tokens_per_s", "tok/s", ".0f"),
                              ("sec_per_step", "s/step", ".3f"), ("timed_steps", "steps", ".0f"),
                              ("timed_tokens", "tokens", ".0f"), ("tokens_per_step", "tokens/step", ".0f"),
                              ("rows_per_step", "rows/step", ".1f"), ("padding_pct", "pad %", ".1f"),
                              ("loss", "loss", ".3f"), ("rss_start_mib", "RSS start MiB", ".0f"),
                              ("peak_rss_mib", "peak RSS MiB", ".0f")])
    ratio, best = None, {}
    for side in ("r1lab", "trl"):
        mine = [r for r in rows if r["side"].startswith(side + " ")]
        if mine:
            best[side] = max(mine, key=lambda r: r["tokens_per_s"])
    for pr in precisions:
        if f"r1lab {pr}" in by and f"trl {pr}" in by:
            print(f"same precision, {pr}: r1lab/trl tokens_per_s {by[f'r1lab {pr}']['tokens_per_s'] / by[f'trl {pr}']['tokens_per_s']:.2f}x")
    paired = None
    if len(best) == 2:
        ratio = best["r1lab"]["tokens_per_s"] / best["trl"]["tokens_per_s"]
        print(f"each side's fastest: {best['r1lab']['side']} against {best['trl']['side']}; peak RSS "
              f"{best['r1lab']['peak_rss_mib']:.0f} against {best['trl']['peak_rss_mib']:.0f} MiB")
        # the same two arms repeat by repeat (their processes ran minutes apart at most): robust to the host's drift
        a, b = (best[k]["per_run_tokens_per_s"] for k in ("r1lab", "trl"))
        paired = [x / y for x, y in zip(a, b)]
        print("per-repeat ratios of those arms: " + ", ".join(f"{r:.2f}x" for r in paired)
              + f"; median {common.median(paired):.2f}x")
    common.print_json("vs_trl_sft", {"args": vars(args), "machine": common.machine(), "trl_version": trl_version,
                                     "sides": by, "ratio_r1lab_over_trl_tokens_per_s": ratio,
                                     "per_repeat_ratios": paired})
    if ratio is not None:
        common.print_ratio("r1lab/trl tokens_per_s (each at its fastest precision)", ratio)
    else:
        common.print_ratio(f"{rows[0]['side']} tokens/s (one side only)", rows[0]["tokens_per_s"])


if __name__ == "__main__":
    sys.exit(main())
