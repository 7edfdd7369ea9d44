"""R1-Zero: GRPO (or PPO) from a base model with rule-based rewards.

    r1lab zero                                   # shipped base, countdown, recipes' defaults
    r1lab zero --recipe recipes/zero.toml --output-dir runs/zero-s1 --seed 1
    r1lab zero --output-dir runs/zero-s1 --resume          # after a crash or kill -9
    r1lab zero --algo ppo --output-dir runs/ppo            # the value-model baseline

The flow of ``run``: open the run directory (refuse to overwrite a checkpoint unless
``--resume``) -> load the policy (+ frozen reference when β > 0, + critic for PPO) and the
task -> restore optimizer, RNG and step from the checkpoint -> held-out evaluation at step 0 ->
for each step: ``rl.step.rl_step`` (sample B prompts × G completions -> rewards, where a raising
or hanging reward scores 0 and is counted -> group advantages -> μ epochs of the clipped
surrogate (+ β·k3 to the reference) -> AdamW with gradient clipping) -> log -> reference refresh
-> held-out evaluation every ``eval_every`` steps (temperature 0.6, top-p 0.95) -> checkpoint
every ``save_every`` steps -> the final model in plain ``save_pretrained`` format.

Differences from R1: π_old is the sampling policy's own log-probs (recorded by the rollout
engine; exact, so no extra forward pass — ``--recompute-old-logp`` recomputes them); the
default loss normalisation is DAPO's token mean and clip-higher is on (ε_high 0.28); β = 0
by default (DAPO, Dr. GRPO), R1 used 0.001. ``--algo ppo`` replaces group advantages by GAE
with a learned value model (same rollouts, same loss), the baseline GRPO is compared against.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from r1lab import distributed, runtime
from r1lab.config import ConfigError, to_dict
from r1lab.engine.rollout import SamplingParams
from r1lab.evaluation.evaluate import evaluate
from r1lab.models import resolve_model, save_pretrained_atomic
from r1lab.rewards.safe import RewardRunner
from r1lab.rl import loop as rl_loop
from r1lab.rl.collect import Prompts
from r1lab.rl.settings import RLSettings
from r1lab.tasks import TASKS, check_spec, get_task, task_kwargs
from r1lab.train import checkpoint, lora
from r1lab.train.tracking import RunLog, parse_report_to

HELP = "R1-Zero: GRPO (or PPO) from a base model with rule rewards"
log = logging.getLogger("r1lab.zero")


@dataclass
class Config(RLSettings):
    """``r1lab zero``: the RL step's settings (``RLSettings``) plus what to train and where."""

    model: str = field(default="", metadata={"help": "base model: directory or hub id ('' = shipped base)"})
    task: str = field(default="countdown", metadata={
        "help": " | ".join(TASKS) + ", or a mixture such as countdown:0.5,knights_knaves:0.5"})
    data: str = field(default="", metadata={"help": "data file or hub id for gsm8k / math"})
    template: str = field(default="", metadata={"help": "prompt template ('' = task default)"})
    task_options: list[str] = field(default_factory=list, metadata={
        "help": "task options KEY=VALUE (e.g. max_people=5 for knights_knaves, seed=1)"})
    sandbox_min_level: str = field(default="", metadata={
        "help": "code task: refuse to grade below this containment level (process | seccomp | namespaces | full)"})
    language: str = field(default="", metadata={
        "help": "target language of the reasoning: en | zh | mix (each prompt English or Chinese; '' = the task's)"})
    language_weight: float = field(default=0.0, metadata={"help": "weight of the language-consistency reward"})
    format_weight: float = field(default=0.1, metadata={"help": "weight of the format reward"})
    reward_fn: str = field(default="", metadata={"help": "custom reward 'module:function' ('' = task's)"})
    reward_timeout: float = field(default=5.0, metadata={"help": "seconds before a reward call scores 0"})
    output_dir: str = field(default="runs/zero", metadata={"help": "run directory"})
    steps: int = field(default=150, metadata={"help": "training steps (one rollout each)"})
    # evaluation, logging, checkpoints
    eval_every: int = field(default=25, metadata={"help": "held-out eval every N steps (0 = start/end only)"})
    eval_problems: int = field(default=200, metadata={"help": "held-out problems per eval"})
    eval_k: int = field(default=8, metadata={"help": "samples per held-out problem"})
    eval_temperature: float = field(default=0.6, metadata={"help": "eval temperature"})
    eval_top_p: float = field(default=0.95, metadata={"help": "eval top-p"})
    save_every: int = field(default=1, metadata={"help": "checkpoint every N steps"})
    sample_every: int = field(default=10, metadata={"help": "log sample completions every N steps (0 = never)"})
    dump_rollouts: bool = field(default=False, metadata={
        "help": "write every trained completion (token ids, text, reward) to rollouts.jsonl"})
    resume: bool = field(default=False, metadata={"help": "continue from RUN_DIR/checkpoint"})
    report_to: str = field(default="tensorboard", metadata={
        "help": "metric loggers besides metrics.jsonl, comma-separated: tensorboard | wandb | trackio | none"})
    device: str = field(default="auto", metadata={"help": "cpu | cuda | auto"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = default)"})
    reuse_memory: bool = field(default=True, metadata={
        "help": "keep freed memory in the process for the next micro-batch instead of returning it to the OS "
                "(glibc mallopt; avoids page faults: on the 2-core dev VM the step at 64 completions was about 10 "
                "percent faster, the update at 256 about 3 percent; RSS stays at its peak)"})

    def validate(self) -> None:
        super().validate()
        if self.steps < 1 or self.save_every < 1 or self.eval_k < 1 or self.eval_problems < 1:
            raise ConfigError("steps, save_every, eval_k and eval_problems must be >= 1")
        if self.eval_every < 0 or self.sample_every < 0 or self.reward_timeout <= 0:
            raise ConfigError("eval_every and sample_every must be >= 0, reward_timeout > 0")
        check_spec(self.task)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be auto | cpu | cuda[:N], not {self.device!r}")
        parse_report_to(self.report_to)
        if self.algo == "distill":
            raise ConfigError("algo 'distill' needs a teacher: use `r1lab distill --mode on-policy`")


def run(cfg: Config) -> dict:
    """Train; returns (and prints as one JSON line) the run's summary."""
    cfg.validate()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_dir = Path(cfg.output_dir)
    ckpt = checkpoint.latest(run_dir)
    if ckpt is not None and not cfg.resume:
        raise ConfigError(f"{run_dir} already holds a checkpoint: pass --resume to continue it, or pick another --output-dir")
    if cfg.resume and ckpt is None:
        log.warning("--resume: no checkpoint in %s, starting from step 0", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    runtime.configure(cfg.threads, cfg.reuse_memory)
    torch.manual_seed(cfg.seed)
    device = distributed.init(cfg.device)  # under torchrun: join the group; rank 0 logs and saves
    learner, tok = rl_loop.load_learner(resolve_model(cfg.model), ckpt, cfg, device)
    task = get_task(cfg.task, **task_kwargs(cfg), format_weight=cfg.format_weight, language_weight=cfg.language_weight)
    train, test = task.examples("train"), task.examples("test")[: cfg.eval_problems]
    if not train:
        raise ConfigError(f"task {cfg.task!r} has no training examples")
    prompts = Prompts(train, lambda ex: task.prompt(ex, tok), stop=("</answer>",))
    engine = rl_loop.make_engine(learner.sampler, tok, cfg, run_dir, max(256, cfg.prompts_per_step * cfg.group_size))
    rewards = RewardRunner(task, cfg.reward_fn or None, cfg.reward_timeout)
    start = rl_loop.restore(learner, ckpt) if ckpt is not None else 0
    main = distributed.is_main()
    if main:
        (run_dir / "config.json").write_text(json.dumps({**to_dict(cfg), "world_size": distributed.world()}, indent=2))
    runlog = RunLog(run_dir, cfg.report_to, start, config=to_dict(cfg))
    t_start = time.time()
    evals = rl_loop.train(learner, engine, prompts, rewards, cfg,
                          rl_loop.Schedule(cfg.steps, cfg.eval_every, cfg.save_every, cfg.sample_every, cfg.dump_rollouts),
                          run_dir, runlog,
                          tok, lambda step: held_out(cfg, learner.sampler, tok, task, test, step, runlog), start, "zero")
    runlog.close()
    final_dir = run_dir / "final"
    if not main:
        distributed.close()
        return {"run_dir": str(run_dir), "rank": distributed.rank()}
    save_pretrained_atomic(lora.plain(learner.sampler), tok, final_dir)
    summary = {
        "run_dir": str(run_dir),
        "final_model": str(final_dir),
        "steps": cfg.steps,
        "minutes_this_session": (time.time() - t_start) / 60,
        "start_pass@1": evals[0]["pass@1"] if evals else None,
        "final_pass@1": evals[-1]["pass@1"] if evals else None,
        "reward_errors": rewards.total_errors,
        "reward_timeouts": rewards.total_timeouts,
        "world_size": distributed.world(),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    distributed.close()
    return summary


def held_out(cfg: Config, policy, tok, task, test: list[dict], step: int, runlog: RunLog) -> dict:
    """pass@1 over ``eval_k`` samples (and cons@k, pass@k, lengths) on the held-out problems."""
    params = SamplingParams(cfg.max_new_tokens, cfg.eval_temperature, cfg.eval_top_p, 0, ("</answer>",), seed=cfg.seed)
    metrics, _ = evaluate(policy, tok, task, test, cfg.eval_k, params, progress=False)
    policy.train()
    row = {"step": step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    runlog.write("eval.jsonl", row, prefix="eval/")
    if distributed.is_main():
        tqdm.write(f"[eval step {step}] pass@1 {metrics['pass@1']:.3f}  mean length {metrics.get('mean_length', 0):.1f}")
    return row
