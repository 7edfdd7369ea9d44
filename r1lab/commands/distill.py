"""Distillation: a teacher's reasoning into a smaller student, R1's way or on-policy.

    r1lab distill --teacher runs/r1/final --student student --mode sft --task countdown
    r1lab distill --teacher runs/r1/final --student student --mode on-policy --steps 100

``--mode sft`` (R1's distillation): the teacher samples ``k`` completions for ``prompts`` training
prompts, the correct and readable ones are kept (``train.rejection``: at most ``max_per_prompt``
per prompt), and the student is fine-tuned on them (``train.sft_loop.fit``: ``epochs``, warm-up,
cosine decay to 1/10). ``--mode on-policy`` (GKD with λ = 1, Thinking Machines 2025): the student
samples, and each of its tokens is pushed towards the teacher by the per-token reverse KL
log π_student − log π_teacher on those tokens (``rl.update``'s teacher advantage, through the
same RL loop as ``zero``). ``--distill-discount`` γ > 0 charges each token the discounted reverse
KL of the rest of its sequence, and ``--distill-reward`` w > 0 adds w × the task reward's group
advantage to every token (``rl.grpo.distill_advantages``); with the defaults (γ = 0, w = 0)
rewards are only logged. Both evaluate the student on the task's
held-out problems (pass@1 over ``eval_k`` samples) at the start and the end, and report compute
next to quality: tokens the teacher ran forward, the student generated (on-policy) and the
student trained on (forward + backward).

Teacher and student must share a tokenizer (the same vocabulary): the on-policy loss compares
their log-probs token by token, and SFT trains on the teacher's tokens. ``--student student`` is
the shipped student base (``r1lab pretrain --preset student``).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from r1lab import distributed, runtime
from r1lab.config import ConfigError, to_dict
from r1lab.engine.rollout import HFEngine, SamplingParams
from r1lab.evaluation.evaluate import evaluate
from r1lab.models import (
    load_model,
    load_tokenizer,
    pad_id,
    resolve_model,
    save_pretrained_atomic,
)
from r1lab.rewards.safe import RewardRunner
from r1lab.rl import loop as rl_loop
from r1lab.rl.collect import Prompts
from r1lab.rl.learner import Learner
from r1lab.rl.settings import RLSettings
from r1lab.tasks import TASKS, check_spec, get_task, task_kwargs
from r1lab.train import checkpoint
from r1lab.train.rejection import Rules, sample_groups, select
from r1lab.train.sft import tokenize
from r1lab.train.sft_loop import SFTSettings, fit
from r1lab.train.tracking import RunLog, parse_report_to

HELP = "distil a teacher into a student: SFT on the teacher's correct samples, or on-policy reverse KL"
log = logging.getLogger("r1lab.distill")


@dataclass
class Config(RLSettings):
    """``r1lab distill``: the RL settings (on-policy mode) plus the teacher, the student and SFT's."""

    teacher: str = field(default="", metadata={"help": "teacher model: directory or hub id"})
    student: str = field(default="student", metadata={"help": "student model ('student' = the shipped student base)"})
    mode: str = field(default="sft", metadata={"help": "sft (R1's: SFT on the teacher's samples) | on-policy"})
    task: str = field(default="countdown", metadata={"help": " | ".join(TASKS) + ", or a mixture"})
    data: str = field(default="", metadata={"help": "data file or hub id for gsm8k / math / code / ..."})
    template: str = field(default="", metadata={"help": "prompt template ('' = task default)"})
    language: str = field(default="", metadata={"help": "target language ('' = task default)"})
    task_options: list[str] = field(default_factory=list, metadata={"help": "task options KEY=VALUE"})
    output_dir: str = field(default="runs/distill", metadata={"help": "run directory"})
    steps: int = field(default=100, metadata={"help": "on-policy: training steps"})
    prompts: int = field(default=2000, metadata={"help": "sft: training prompts the teacher samples"})
    k: int = field(default=4, metadata={"help": "sft: teacher samples per prompt"})
    max_per_prompt: int = field(default=1, metadata={"help": "sft: rows kept per prompt"})
    keep: str = field(default="correct", metadata={"help": "sft: keep the correct samples | top (highest reward)"})
    epochs: int = field(default=2, metadata={"help": "sft: passes over the teacher's rows (R1: 2)"})
    tokens_per_step: int = field(default=8192, metadata={"help": "sft: tokens per optimizer step"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "sft: cosine decay to this share of the peak"})
    eval_problems: int = field(default=200, metadata={"help": "held-out problems per evaluation"})
    eval_k: int = field(default=8, metadata={"help": "samples per held-out problem"})
    eval_every: int = field(default=0, metadata={
        "help": "on-policy: held-out eval every N steps, to eval.jsonl (0 = start/end only, eval_student.jsonl)"})
    save_every: int = field(default=10, metadata={"help": "checkpoint every N steps"})
    resume: bool = field(default=False, metadata={"help": "continue from RUN_DIR/checkpoint"})
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard | wandb | trackio | none"})
    device: str = field(default="auto", metadata={"help": "cpu | cuda | auto"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = default)"})

    def validate(self) -> None:
        self.algo = "distill" if self.mode == "on-policy" else self.algo
        super().validate()
        if self.lora_rank > 0:  # wired in sft and zero; here the stages would need it each
            raise ConfigError("--lora-rank is supported by r1lab sft and r1lab zero, not yet by r1lab distill")
        if not self.teacher:
            raise ConfigError("give the teacher: --teacher DIR or hub id")
        if self.keep not in ("correct", "top"):
            raise ConfigError(f"keep must be correct | top, not {self.keep!r}")
        if self.mode not in ("sft", "on-policy"):
            raise ConfigError(f"mode must be sft | on-policy, not {self.mode!r}")
        if min(self.steps, self.prompts, self.k, self.epochs, self.eval_k, self.save_every) < 1:
            raise ConfigError("steps, prompts, k, epochs, eval_k and save_every must be >= 1")
        check_spec(self.task)
        parse_report_to(self.report_to)


def run(cfg: Config) -> dict:
    cfg.validate()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_dir = Path(cfg.output_dir)
    ckpt = checkpoint.latest(run_dir)
    if ckpt is not None and not cfg.resume:
        raise ConfigError(f"{run_dir} already holds a checkpoint: pass --resume to continue it, or pick another --output-dir")
    runtime.configure(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = distributed.init(cfg.device)  # under torchrun: ranks share sampling and training, rank 0 writes
    main = distributed.is_main()
    tok = load_tokenizer(cfg.student)
    check_same_tokenizer(load_tokenizer(cfg.teacher), tok, cfg.teacher, cfg.student)
    student = load_model(str(ckpt / "policy") if ckpt else resolve_model(cfg.student), device=device).train()
    teacher = load_model(cfg.teacher, device=device).eval().requires_grad_(False)
    task = get_task(cfg.task, **task_kwargs(cfg))
    train, test = task.examples("train"), task.examples("test")[: cfg.eval_problems]
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        (run_dir / "config.json").write_text(json.dumps({**to_dict(cfg), "world_size": distributed.world()}, indent=2))
    before = held_out(cfg, student, tok, task, test)
    if cfg.mode == "sft":
        extra = distill_sft(cfg, teacher, student, tok, task, train, run_dir, ckpt)
    else:
        extra = distill_on_policy(cfg, teacher, student, tok, task, train, run_dir, ckpt)
    after = held_out(cfg, student, tok, task, test)
    summary = {"run_dir": str(run_dir), "mode": cfg.mode, "teacher": cfg.teacher, "student": cfg.student,
               "start_pass@1": before["pass@1"], "final_pass@1": after["pass@1"], **extra}
    if not main:
        distributed.close()
        return summary
    with open(run_dir / "eval_student.jsonl", "w") as fh:
        fh.write(json.dumps({"when": "start", **before}) + "\n" + json.dumps({"when": "end", **after}) + "\n")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    distributed.close()
    return summary


def check_same_tokenizer(a, b, name_a: str, name_b: str) -> None:
    if a.get_vocab() != b.get_vocab():
        raise ConfigError(f"teacher {name_a!r} and student {name_b!r} have different tokenizers; distillation here "
                          "compares and trains on the same tokens (pretrain the student with --tokenizer TEACHER)")


def distill_sft(cfg: Config, teacher, student, tok, task, train: list, run_dir: Path, ckpt) -> dict:
    """R1's distillation: the teacher's correct, readable samples -> SFT of the student."""
    rows_file = run_dir / "teacher_rows.jsonl"
    if ckpt is not None and rows_file.is_file():  # a resumed run trains on the rows it sampled
        rows = [json.loads(x) for x in rows_file.read_text().splitlines()]
        summary = json.loads((run_dir / "teacher_rows.summary.json").read_text())
    else:
        examples = random.Random(f"distill-{cfg.seed}").sample(train, min(cfg.prompts, len(train)))
        engine = HFEngine(teacher, tok, max_batch=256)
        params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p, 0, ("</answer>",), seed=cfg.seed)
        groups = sample_groups(task, tok, engine, RewardRunner(task), examples, cfg.k, params, desc="teacher")
        rows, summary = select(groups, task, Rules(keep=cfg.keep, max_per_prompt=cfg.max_per_prompt), random.Random(cfg.seed), tok)
        summary["teacher_pass_rate"] = sum(c.correct for g in groups for c in g) / max(1, summary["candidates"])
        summary["teacher_tokens"] = sum(len(tok(c.prompt + c.completion)["input_ids"]) for g in groups for c in g)
        if distributed.is_main():
            rows_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            (run_dir / "teacher_rows.summary.json").write_text(json.dumps(summary, indent=2))
    if not rows:
        raise ConfigError(f"the teacher {cfg.teacher!r} had no correct readable sample on {cfg.prompts} prompts")
    examples, _ = tokenize(rows, tok, "raw", 4 * cfg.max_new_tokens + 512)
    teacher_tokens = summary.get("teacher_tokens", 0)
    s = SFTSettings(epochs=cfg.epochs, lr=cfg.lr, warmup=cfg.warmup, min_lr_ratio=cfg.min_lr_ratio,
                    weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, tokens_per_step=cfg.tokens_per_step,
                    micro_batch_tokens=max(cfg.micro_batch_tokens, 1), save_every=cfg.save_every,
                    resume=cfg.resume, report_to=cfg.report_to, seed=cfg.seed, parallel=cfg.parallel)
    fitted = fit(student, tok, examples, [], s, run_dir, ckpt, to_dict(cfg), desc="distill")
    return {"teacher_rows": len(rows), "teacher_pass_rate": summary["teacher_pass_rate"], "sft_steps": fitted["steps"],
            "compute": {"teacher_forward_tokens": teacher_tokens, "student_forward_tokens": 0,
                        "student_train_tokens": sum(e.length for e in examples) * cfg.epochs}}


def distill_on_policy(cfg: Config, teacher, student, tok, task, train: list, run_dir: Path, ckpt) -> dict:
    """The student samples; reverse KL to the teacher on its tokens (the RL loop, teacher advantage)."""
    rollout = rl_loop.shard_policy(student, cfg)  # --parallel fsdp: shards + a full copy to sample from
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    learner = Learner(student, opt, pad_id(tok), teacher=teacher, rollout=rollout)
    start = rl_loop.restore(learner, ckpt) if ckpt is not None else 0
    runlog = RunLog(run_dir, cfg.report_to, start, config=to_dict(cfg))
    engine = rl_loop.make_engine(learner.sampler, tok, cfg, run_dir, max(256, cfg.prompts_per_step * cfg.group_size))
    prompts = Prompts(train, lambda ex: task.prompt(ex, tok))
    test = task.examples("test")[: cfg.eval_problems]

    def between(step: int) -> dict:  # start and end are evaluated around the loop (eval_student.jsonl)
        if step in (0, cfg.steps):
            return {}
        row = {"step": step, **held_out(cfg, learner.sampler, tok, task, test)}
        runlog.write("eval.jsonl", row, prefix="eval/")
        return row

    rl_loop.train(learner, engine, prompts, RewardRunner(task), cfg,
                  rl_loop.Schedule(cfg.steps, cfg.eval_every, cfg.save_every, 10), run_dir, runlog, tok,
                  between if cfg.eval_every else None, start, "distill")
    runlog.close()
    if distributed.is_main():
        save_pretrained_atomic(learner.sampler, tok, run_dir / "final")
    distributed.barrier()
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seq = sum(r.get("sequence_tokens", 0) for r in rows)  # every sampled sequence: generated, scored, trained on
    return {"steps": cfg.steps, "start_reverse_kl": rows[0].get("reverse_kl"), "final_reverse_kl": rows[-1].get("reverse_kl"),
            "compute": {"teacher_forward_tokens": seq, "student_forward_tokens": seq, "student_train_tokens": seq}}


def held_out(cfg: Config, model, tok, task, test: list) -> dict:
    params = SamplingParams(cfg.max_new_tokens, 0.6, 0.95, 0, ("</answer>",), seed=cfg.seed)
    metrics, _ = evaluate(model, tok, task, test, cfg.eval_k, params, progress=False)
    model.train()
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
