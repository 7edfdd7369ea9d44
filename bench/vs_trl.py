"""GRPO end to end: ``r1lab zero`` vs TRL's ``GRPOTrainer``, same model, task, prompts and settings.

    pip install 'trl>=0.14'        # benchmark-only extra (r1lab[bench]); measured with trl 1.16.0
    python bench/vs_trl.py         # shipped base, countdown, 8 prompts × 8, 128 tokens, 1 warm-up + 5 steps
    python bench/vs_trl.py --prompts 2 --group 4 --max-new-tokens 24 --steps 2 --repeats 1   # a smoke run

What it measures: seconds per training step (rollout -> reward -> advantages -> loss ->
backward -> AdamW step), completion tokens per second (sampled tokens / step time) and peak
resident memory of each side. Each side runs in its own subprocess (``--side``), so the peak
RSS (getrusage ru_maxrss of that process and its children) is its own; ``--repeats``
processes per side, alternating r1lab / TRL; reported: the median over processes of each
process's median step time, after ``--warmup`` untimed steps.

Step time: r1lab: ``time/step`` of metrics.jsonl (``rl.step.rl_step``: rollout + rewards + pack +
update; the start/end evaluation, logging and checkpoints are outside it). TRL: a
``TrainerCallback`` from ``on_step_begin`` to ``on_step_end`` (generation + scoring inside
``training_step``, backward, clipping, optimizer step; logging and saving are outside it).
Rollout time is also shown: r1lab's ``time/rollout``, TRL's ``_generate_and_score_completions``.

Held equal (r1lab Config ⇔ TRL GRPOConfig):
  model          the same directory, fp32, sdpa attention, CPU, torch threads = cores
  task, prompts  countdown, short template; the exact prompt strings r1lab draws at each
                 step (``rl.collect.prompt_indices``) are TRL's dataset rows in that order
                 (``shuffle_dataset=False``); TRL's reward calls r1lab's ``task.reward``
  B, G           prompts_per_step = B, group_size = G ⇔ generation_batch_size = B·G,
                 num_generations = G; one optimizer step per B·G completions on both sides
                 (TRL: per_device_train_batch_size = ``--trl-micro-batch`` and
                 gradient_accumulation_steps = B·G / that; with loss_type "dapo" TRL normalises
                 by the tokens of the whole generation batch, as r1lab's norm="token" does)
  length         max_new_tokens ⇔ max_completion_length; both stop at EOS or ``</answer>``
                 (one token of the shipped tokenizer: added to the model's
                 generation_config.eos_token_id for TRL, which stops and masks on it)
  sampling       temperature 1.0, top_p 1.0, top_k 0 (off) on both
  objective      norm="token" ⇔ loss_type="dapo" (Σ token losses / tokens of the batch);
                 scale="group" ⇔ scale_rewards="group" (std + 1e-4 on both); eps 0.2 / 0.28
                 ⇔ epsilon / epsilon_high; beta 0 on both (no reference model); mu 1 ⇔
                 num_iterations 1 (no π_old recomputation on either side)
  optimizer      AdamW lr ``--lr``, betas (0.9, 0.99), weight decay 0, constant schedule,
                 no warm-up (r1lab warmup=0 ⇔ lr_scheduler_type="constant"), grad clip 1.0
                 ⇔ optim="adamw_torch", adam_beta2=0.99, max_grad_norm=1.0
  no vLLM        use_vllm=False (TRL's default), r1lab's own HF engine
  allocator      both processes keep freed memory for reuse (glibc mallopt, ``r1lab.runtime``), as
                 r1lab's commands do by default; ``--system-malloc`` runs both with glibc's defaults
                 (measured: each side ~8-10% slower, docs/performance.md row 17)

TRL's side at its documented best CPU settings: use_cpu=True, bf16=False and fp16=False
(GRPOConfig defaults bf16 to True), gradient_checkpointing=False (GRPOConfig defaults it to
True), dataloader_num_workers=0, report_to="none", save_strategy="no", logging_steps larger
than the run, disable_tqdm=True, log_completions=False, torch.set_num_threads(cores), and
micro-batches of 16 for its loss passes: measured on the 2-core dev machine (B·G = 64, median
of 2 processes each): 8 → 2.78 s/step (645 MiB), 16 → 2.58 s (786 MiB), 32 → 3.12 s (1019 MiB),
64 → 2.74 s (1333 MiB); 16 is the fastest, so it is the default of ``--trl-micro-batch``.
r1lab's side: its defaults for everything not listed (micro_batch 64 with micro_batch_tokens
2048, i.e. length-bucketed micro-batches of at most 2048 padded tokens; reward thread pool),
report_to="none", eval_problems=1 / eval_k=1 (evaluation is outside the timed steps anyway).

Not equal, by design: TRL prefills every one of the B·G rows (r1lab shares one prefill per
prompt) and ``model.generate`` decodes finished rows until the last row ends; TRL
recomputes nothing extra with these settings. Random streams differ (different completions
of similar length; the mean length is printed).

Last line: ``ratio r1lab/trl steps_per_s: X.XXx`` (TRL's s/step over r1lab's).
"""

from __future__ import annotations

import argparse
import json
import os
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
    p.add_argument("--prompts", type=int, default=8, help="B: prompts per step")
    p.add_argument("--group", type=int, default=8, help="G: completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=128, help="completion length limit")
    p.add_argument("--steps", type=int, default=5, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--repeats", type=int, default=3, help="processes per side (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores of this process)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trl-micro-batch", type=int, default=16,
                   help="TRL per_device_train_batch_size (gradient accumulation makes up B·G; 0 = B·G, one pass)")
    p.add_argument("--sides", default="r1lab,trl", help="which sides to run")
    p.add_argument("--system-malloc", action="store_true",
                   help="both sides with glibc's default allocator settings (default: both keep freed memory, "
                        "r1lab.runtime.keep_freed_memory, as r1lab's commands do)")
    p.add_argument("--side", default="", help=argparse.SUPPRESS)  # internal: run one side here
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def peak_rss_mib() -> float:
    """Peak resident memory of this process and of its waited-for children (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def stop_token_ids(tok) -> list[int]:
    """EOS plus ``</answer>`` when it is a single token (it is in the shipped tokenizer)."""
    ids = {int(tok.eos_token_id)}
    enc = tok("</answer>", add_special_tokens=False)["input_ids"]
    if len(enc) != 1:
        raise SystemExit("'</answer>' is not one token of this tokenizer: TRL could only stop on it through "
                         "stop_strings, which this benchmark does not wire up")
    ids.add(enc[0])
    return sorted(ids)


def step_prompts(args, task, tok, train) -> list[tuple[int, str]]:
    """(example index, prompt) of every prompt r1lab's zero draws, step by step."""
    from r1lab.rl.collect import prompt_indices

    out = []
    for step in range(args.warmup + args.steps):
        for i in prompt_indices(step, 0, len(train), args.prompts, args.seed):
            out.append((i, task.prompt(train[i], tok)))
    return out


# --------------------------------------------------------------------------------------------
# r1lab side
# --------------------------------------------------------------------------------------------


def side_r1lab(args, path: str, workdir: Path) -> dict:
    from r1lab.commands.zero import Config, run

    cfg = Config(
        model=path, task="countdown", output_dir=str(workdir / "run"), steps=args.warmup + args.steps,
        prompts_per_step=args.prompts, group_size=args.group, max_new_tokens=args.max_new_tokens,
        temperature=1.0, top_p=1.0, top_k=0, scale="group", norm="token", level="token", eps_low=0.2,
        eps_high=0.28, beta=0.0, lr=args.lr, warmup=0, schedule="constant", weight_decay=0.0, grad_clip=1.0,
        mu=1, minibatches=1, eval_every=0, eval_problems=1, eval_k=1, save_every=10**9, sample_every=0,
        report_to="none", threads=args.threads, seed=args.seed, device="cpu", reuse_memory=not args.system_malloc,
    )
    t0 = time.perf_counter()
    run(cfg)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (workdir / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["step"] >= args.warmup]
    n = args.prompts * args.group
    return {
        "step_sec": [r["time/step"] for r in rows],
        "rollout_sec": [r["time/rollout"] for r in rows],
        "completion_tokens": [r["response_length"] * n for r in rows],
        "reward": [r["reward"] for r in rows],
        "wall_sec": wall,
    }


# --------------------------------------------------------------------------------------------
# TRL side
# --------------------------------------------------------------------------------------------


def side_trl(args, path: str, workdir: Path) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from r1lab.models import load_tokenizer
    from r1lab.tasks import get_task

    tok = load_tokenizer(path)
    task = get_task("countdown")
    train = task.examples("train")
    rows = step_prompts(args, task, tok, train)
    p0 = rows[0][1]
    if tok(p0)["input_ids"] != tok(p0, add_special_tokens=False)["input_ids"]:  # TRL tokenizes with specials
        raise SystemExit("the tokenizer adds special tokens to prompts: TRL and r1lab would see different ids")
    data = Dataset.from_dict({"prompt": [p for _, p in rows], "example": [i for i, _ in rows]})

    tokens: list[int] = []

    def countdown_reward(prompts, completions, completion_ids, example, **kwargs):
        tokens.append(sum(len(c) for c in completion_ids))  # up to and including EOS / </answer>
        return [task.reward(train[i], c)[0] for i, c in zip(example, completions)]

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    model.generation_config.eos_token_id = stop_token_ids(tok)  # TRL stops and masks on these

    n = args.prompts * args.group
    mb = args.trl_micro_batch or n
    if n % mb:
        raise SystemExit(f"--trl-micro-batch {mb} must divide B·G = {n}")
    no_ckpt = {"gradient_checkpointing": False}  # GRPOConfig defaults it to True
    if "activation_checkpointing" in GRPOConfig.__dataclass_fields__:  # its new name (transformers >= 5.2x)
        no_ckpt["activation_checkpointing"] = False
    cfg = GRPOConfig(
        output_dir=str(workdir / "trl"),
        use_cpu=True, bf16=False, fp16=False, **no_ckpt,
        per_device_train_batch_size=mb, gradient_accumulation_steps=n // mb, generation_batch_size=n,
        num_generations=args.group, max_completion_length=args.max_new_tokens,
        temperature=1.0, top_p=1.0, top_k=0,
        loss_type="dapo", scale_rewards="group", epsilon=0.2, epsilon_high=0.28, beta=0.0, num_iterations=1,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch",
        adam_beta1=0.9, adam_beta2=0.99, weight_decay=0.0, max_grad_norm=1.0,
        max_steps=args.warmup + args.steps, shuffle_dataset=False, dataloader_num_workers=0,
        logging_steps=10**6, report_to="none", save_strategy="no", disable_tqdm=True, log_completions=False,
        seed=args.seed,
    )

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.sec: list[float] = []
            self.t = 0.0

        def on_step_begin(self, a, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            self.sec.append(time.perf_counter() - self.t)

    rollout: list[float] = []

    class Timed(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            t = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            rollout.append(time.perf_counter() - t)
            return out

    timer = StepTimer()
    trainer = Timed(model=model, reward_funcs=countdown_reward, args=cfg, train_dataset=data,
                    processing_class=tok, callbacks=[timer])
    torch.set_num_threads(args.threads)  # after the trainer: nothing in its setup may change it
    checkpointing = bool(getattr(trainer.model, "is_gradient_checkpointing", False))
    if checkpointing or trainer.args.bf16 or trainer.args.fp16 or trainer.accelerator.device.type != "cpu":
        raise SystemExit(f"TRL is not at the intended settings: checkpointing {checkpointing}, bf16 "
                         f"{trainer.args.bf16}, fp16 {trainer.args.fp16}, device {trainer.accelerator.device}")
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    w = args.warmup
    return {
        "step_sec": timer.sec[w:],
        "rollout_sec": rollout[w:],
        "completion_tokens": tokens[w:],
        "wall_sec": wall,
        "trl_version": trl.__version__,
    }


def child(args) -> None:
    common.quiet()
    args.threads = common.set_threads(args.threads, reuse_memory=not args.system_malloc)
    from r1lab.models import resolve_model

    path = resolve_model(args.model)
    with tempfile.TemporaryDirectory(prefix=f"r1lab-bench-{args.side}-") as tmp:
        fn = side_r1lab if args.side == "r1lab" else side_trl
        out = fn(args, path, Path(tmp))
    out.update(side=args.side, peak_rss_mib=peak_rss_mib(), threads=args.threads)
    Path(args.result).write_text(json.dumps(out))


# --------------------------------------------------------------------------------------------
# parent: run the sides, summarise
# --------------------------------------------------------------------------------------------


def run_side(args, side: str, log_dir: Path, rep: int) -> dict:
    result = log_dir / f"{side}-{rep}.json"
    log = log_dir / f"{side}-{rep}.log"
    cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--result", str(result),
           "--model", args.model, "--prompts", str(args.prompts), "--group", str(args.group),
           "--max-new-tokens", str(args.max_new_tokens), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--lr", str(args.lr), "--threads", str(args.threads), "--seed", str(args.seed),
           "--trl-micro-batch", str(args.trl_micro_batch)] + (["--system-malloc"] if args.system_malloc else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([common.ROOT, os.environ.get("PYTHONPATH", "")]))
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=common.ROOT)
    if proc.returncode != 0 or not result.is_file():
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{side} run {rep} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return json.loads(result.read_text())


def summarise(side: str, runs: list[dict]) -> dict:
    per_run_step = [common.median(r["step_sec"]) for r in runs]
    per_run_tps = [sum(r["completion_tokens"]) / sum(r["step_sec"]) for r in runs]
    return {
        "side": side,
        "sec_per_step": common.median(per_run_step),
        "rollout_sec_per_step": common.median([common.median(r["rollout_sec"]) for r in runs]),
        "completion_tokens_per_s": common.median(per_run_tps),
        "completion_tokens_per_step": common.median([sum(r["completion_tokens"]) / len(r["completion_tokens"]) for r in runs]),
        "peak_rss_mib": common.median([r["peak_rss_mib"] for r in runs]),
        "per_run_sec_per_step": per_run_step,
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
    log_dir = Path(tempfile.mkdtemp(prefix="r1lab-bench-vs-trl-"))
    results: dict[str, list[dict]] = {s: [] for s in sides}
    for rep in range(args.repeats):
        for side in sides:
            results[side].append(run_side(args, side, log_dir, rep))
    rows = [summarise(s, results[s]) for s in sides]
    by = {r["side"]: r for r in rows}
    n = args.prompts * args.group
    trl_version = next((r.get("trl_version") for r in results.get("trl", [])), None)
    print(f"countdown, {args.prompts} prompts x {args.group} = {n} completions/step, max {args.max_new_tokens} "
          f"tokens, lr {args.lr}; {args.warmup} warm-up + {args.steps} timed steps per process, "
          f"median of {args.repeats} processes per side; {args.threads} threads; trl {trl_version}; logs {log_dir}")
    common.print_table(rows, [("side", "side", "s"), ("sec_per_step", "s/step", ".2f"),
                              ("rollout_sec_per_step", "rollout s", ".2f"),
                              ("completion_tokens_per_s", "compl tok/s", ".0f"),
                              ("completion_tokens_per_step", "tokens/step", ".0f"), ("peak_rss_mib", "peak RSS MiB", ".0f")])
    ratio = None
    if "r1lab" in by and "trl" in by:
        ratio = by["trl"]["sec_per_step"] / by["r1lab"]["sec_per_step"]
    common.print_json("vs_trl", {"args": vars(args), "machine": common.machine(), "trl_version": trl_version,
                                 "sides": by, "ratio_r1lab_over_trl_steps_per_s": ratio})
    if ratio is not None:
        common.print_ratio("r1lab/trl steps_per_s", ratio)
    else:
        common.print_ratio(f"{rows[0]['side']} s/step (one side only)", rows[0]["sec_per_step"])


if __name__ == "__main__":
    sys.exit(main())
