"""DeepSeek-R1's four stages as one command, each in its own directory, resumable at any stage.

    r1lab r1 --recipe recipes/r1.toml --output-dir runs/r1
    r1lab r1 --recipe recipes/r1.toml --output-dir runs/r1 --resume      # after kill -9, anywhere

The flow of ``run`` (R1 §2.3; ``../shared/DESIGN.md``, "R1 pipeline reference"):

1. ``1-cold-start``: SFT of the base on ``cold_start_rows`` clean, readable worked solutions in
   the target language. On the toy they come from each task's own generator of solutions
   (``Task.demonstration``: the corpus's attempt-check-retry style, retrying until right), kept
   only when graded correct and readable: R1 used few-shot prompting, cleaned R1-Zero outputs and
   human post-editing for the same end — long, readable, correct, one language.
2. ``2-reasoning-rl``: GRPO on the reasoning tasks (``task``) with accuracy + format +
   ``language_weight`` · language consistency (R1 §2.3.2: summed with the accuracy reward).
3. ``3-rejection-sft``: ``rs_k`` samples per prompt from stage 2, the correct and readable ones kept
   (at most ``rs_max_per_prompt``), plus the non-reasoning mix (``non_reasoning`` of them: the
   answer with an empty think block) -> SFT of the **base** model (not of stage 2's).
4. ``4-all-rl``: GRPO on every scenario (``final_task``, a mixture) at temperature
   ``final_temperature`` (R1: 0.7), with ``final_language_weight`` · language consistency.
   R1 names the language reward for stage 2 only; kept on here (0.2) because without it stage 4
   undoes stage 2's consistency (docs/findings.md, session 14: mixed reasoning 0.035 after stage
   2, 0.141 after stage 4 without the reward, 0.068 with it, pass@1 0.492 / 0.487).

A stage whose ``summary.json`` exists is done and never redone; an unfinished one resumes from its
checkpoint (its ``summary.json`` is written last, after the stage's evaluation). After each stage
the model is evaluated on the held-out problems of ``final_task`` (pass@1 per task, length,
reflection, language consistency): ``r1_stages.jsonl`` and ``r1_report.md`` show them stage by stage.
"""

from __future__ import annotations

import dataclasses
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
from r1lab.evaluation.readability import problems
from r1lab.models import load_model, load_tokenizer, resolve_model, save_pretrained_atomic
from r1lab.rewards.safe import RewardRunner
from r1lab.rl import loop as rl_loop
from r1lab.rl.collect import Prompts
from r1lab.rl.settings import RLSettings
from r1lab.tasks import check_spec, get_task, task_kwargs
from r1lab.tasks.mixture import is_mixture, parse_spec
from r1lab.train import checkpoint
from r1lab.train.rejection import Rules, sample_groups, select
from r1lab.train.sft import tokenize
from r1lab.train.sft_loop import SFTSettings, fit
from r1lab.train.tracking import RunLog, parse_report_to

HELP = "the R1 recipe: cold-start SFT -> reasoning RL -> rejection sampling + SFT -> RL for all scenarios"
STAGES = ("1-cold-start", "2-reasoning-rl", "3-rejection-sft", "4-all-rl")
log = logging.getLogger("r1lab.r1")


@dataclass
class Config(RLSettings):
    """``r1lab r1``: the RL stages' settings (``RLSettings``) plus each stage's own."""

    model: str = field(default="", metadata={"help": "base model: directory or hub id ('' = shipped base)"})
    task: str = field(default="countdown:0.5,knights_knaves:0.25,code:0.25", metadata={
        "help": "stages 1-3: the reasoning tasks (a task or a mixture)"})
    final_task: str = field(default="countdown:0.4,knights_knaves:0.2,code:0.2,arithmetic:0.2", metadata={
        "help": "stage 4 and every evaluation: all scenarios"})
    language: str = field(default="en", metadata={
        "help": "target language of the reasoning: en | zh | mix (each prompt English or Chinese, half each)"})
    task_options: list[str] = field(default_factory=list, metadata={
        "help": "task options KEY=VALUE, or MEMBER.KEY=VALUE for one task of a mixture (gsm8k.data=DIR)"})
    language_weight: float = field(default=0.2, metadata={"help": "stage 2: weight of the language-consistency reward"})
    final_language_weight: float = field(default=0.2, metadata={
        "help": "stage 4: weight of the language-consistency reward (0 = none: accuracy + format only)"})
    output_dir: str = field(default="runs/r1", metadata={"help": "run directory (one folder per stage inside)"})
    cold_start_rows: int = field(default=2000, metadata={"help": "stage 1: clean worked solutions"})
    sft_epochs: int = field(default=2, metadata={"help": "stages 1 and 3: SFT epochs (R1: 2)"})
    sft_lr: float = field(default=3e-4, metadata={"help": "stages 1 and 3: SFT peak learning rate"})
    tokens_per_step: int = field(default=8192, metadata={"help": "stages 1 and 3: SFT tokens per step"})
    rl_steps: int = field(default=60, metadata={"help": "stage 2: GRPO steps"})
    rs_prompts: int = field(default=1000, metadata={"help": "stage 3: prompts sampled from stage 2"})
    rs_k: int = field(default=4, metadata={"help": "stage 3: samples per prompt"})
    rs_max_per_prompt: int = field(default=2, metadata={"help": "stage 3: rows kept per prompt"})
    non_reasoning: float = field(default=0.33, metadata={"help": "stage 3: non-reasoning rows per reasoning row"})
    final_steps: int = field(default=40, metadata={"help": "stage 4: GRPO steps"})
    final_temperature: float = field(default=0.7, metadata={"help": "stage 4: rollout temperature (R1: 0.7)"})
    eval_problems: int = field(default=200, metadata={"help": "held-out problems per evaluation (all tasks)"})
    eval_k: int = field(default=4, metadata={"help": "samples per held-out problem"})
    save_every: int = field(default=5, metadata={"help": "RL stages: checkpoint every N steps"})
    resume: bool = field(default=False, metadata={"help": "continue an interrupted pipeline"})
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard | wandb | trackio | none"})
    device: str = field(default="auto", metadata={"help": "cpu | cuda | auto"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = default)"})

    def validate(self) -> None:
        super().validate()
        if self.lora_rank > 0:  # wired in sft and zero; here the stages would need it each
            raise ConfigError("--lora-rank is supported by r1lab sft and r1lab zero, not yet by r1lab r1")
        check_spec(self.task)
        check_spec(self.final_task)
        if min(self.cold_start_rows, self.sft_epochs, self.rl_steps, self.rs_prompts, self.rs_k,
               self.rs_max_per_prompt, self.final_steps, self.eval_k, self.save_every) < 1:
            raise ConfigError("stage sizes (rows, epochs, steps, prompts, k) must be >= 1")
        if min(self.language_weight, self.final_language_weight) < 0:
            raise ConfigError("language_weight and final_language_weight must be >= 0")
        if self.non_reasoning < 0 or self.final_temperature <= 0 or self.algo != "grpo":
            raise ConfigError("non_reasoning must be >= 0, final_temperature > 0, and the RL stages use grpo")
        parse_report_to(self.report_to)


def run(cfg: Config) -> dict:
    cfg.validate()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(cfg.output_dir)
    runtime.configure(cfg.threads)
    device = distributed.init(cfg.device)  # under torchrun every stage runs data-parallel; rank 0 writes
    if out.is_dir() and any(out.iterdir()) and not cfg.resume:
        raise ConfigError(f"{out} already holds a pipeline: pass --resume to continue it, or pick another --output-dir")
    distributed.barrier()  # every rank has looked before rank 0 writes
    out.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        (out / "config.json").write_text(json.dumps({**to_dict(cfg), "world_size": distributed.world()}, indent=2))
    base = resolve_model(cfg.model)
    m1 = stage(out, STAGES[0], cfg, device, lambda d: cold_start(cfg, base, d, device))
    m2 = stage(out, STAGES[1], cfg, device, lambda d: rl_stage(cfg, m1, d, cfg.task, cfg.rl_steps, cfg.temperature,
                                                               cfg.language_weight, device))
    m3 = stage(out, STAGES[2], cfg, device, lambda d: rejection_sft(cfg, m2, base, d, device))
    m4 = stage(out, STAGES[3], cfg, device, lambda d: rl_stage(cfg, m3, d, cfg.final_task, cfg.final_steps,
                                                               cfg.final_temperature, cfg.final_language_weight,
                                                               device))
    rows = [{"stage": n, **json.loads((out / n / "summary.json").read_text())["eval"]} for n in STAGES]
    summary = {"run_dir": str(out), "final_model": m4, "stages": {r["stage"]: r.get("pass@1") for r in rows}}
    if not distributed.is_main():
        distributed.close()
        return summary
    (out / "r1_stages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(out, rows)
    print(json.dumps(summary))
    distributed.close()
    return summary


def _task(cfg: Config, spec: str, **extra):
    """``spec``'s task with the options of ``task_options`` that apply to it: MEMBER.KEY=VALUE
    only when MEMBER is in ``spec`` (the reasoning and final mixtures may differ)."""
    names = {n for n, _ in parse_spec(spec)} if is_mixture(spec) else {spec}
    kw = {k: v for k, v in task_kwargs(cfg).items() if "." not in k or k.split(".", 1)[0] in names}
    if not is_mixture(spec):
        kw = {k.split(".", 1)[1] if "." in k else k: v for k, v in kw.items()}
    return get_task(spec, **{"language": cfg.language, **kw, **extra})


def stage(out: Path, name: str, cfg: Config, device: str, body) -> str:
    """Run one stage unless its summary says it is done; evaluate its model; return that model's path."""
    d = out / name
    done = d / "summary.json"
    if not done.is_file():
        torch.manual_seed(cfg.seed)
        summary = body(d)
        summary["eval"] = held_out(cfg, summary["final_model"], device)
        if distributed.is_main():
            done.write_text(json.dumps(summary, indent=2))  # written last: the stage is done
        distributed.barrier()
    return json.loads(done.read_text())["final_model"]


def cold_start(cfg: Config, base: str, d: Path, device: str) -> dict:
    """Clean worked solutions of the reasoning tasks -> SFT of the base."""
    task = _task(cfg, cfg.task)
    tok = load_tokenizer(base)
    rng = random.Random(f"cold-start-{cfg.seed}")
    train = task.examples("train")
    rows = []
    for ex in rng.sample(train, min(len(train), 3 * cfg.cold_start_rows)):
        text = task.member(ex).demonstration(ex, rng) if hasattr(task, "member") else task.demonstration(ex, rng)
        if text is None or not task.grade(ex, text).correct or problems(text, task.language_of(ex), ex.get("task") == "code"):
            continue
        rows.append({"prompt": task.prompt(ex, tok), "response": text, "source": "demonstration", "task": ex.get("task")})
        if len(rows) >= cfg.cold_start_rows:
            break
    if not rows:
        raise ConfigError(f"task {cfg.task!r} has no generator of clean solutions for the cold start")
    d.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        (d / "rows.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return sft_on(cfg, base, rows, d, device) | {"rows": len(rows)}


def sft_on(cfg: Config, src: str, rows: list[dict], d: Path, device: str) -> dict:
    ckpt = checkpoint.latest(d)
    start = str(ckpt / "policy") if ckpt else src
    tok = load_tokenizer(start)
    model = load_model(start, device=device).train()
    examples, _ = tokenize(rows, tok, "raw", 4 * cfg.max_new_tokens + 512)
    s = SFTSettings(epochs=cfg.sft_epochs, lr=cfg.sft_lr, warmup=cfg.warmup, tokens_per_step=cfg.tokens_per_step,
                    micro_batch_tokens=cfg.micro_batch_tokens or SFTSettings.micro_batch_tokens, save_every=cfg.save_every, resume=True,
                    report_to=cfg.report_to, seed=cfg.seed, eval_every=0, parallel=cfg.parallel)
    return fit(model, tok, examples, [], s, d, ckpt, to_dict(cfg), desc=d.name)


def rl_stage(cfg: Config, src: str, d: Path, task_spec: str, steps: int, temperature: float, language_weight: float,
             device: str) -> dict:
    """GRPO from ``src`` on ``task_spec`` for ``steps`` steps (resumed from d's checkpoint)."""
    s = dataclasses.replace(cfg, temperature=temperature)
    ckpt = checkpoint.latest(d)
    learner, tok = rl_loop.load_learner(src, ckpt, s, device)
    task = _task(cfg, task_spec, language_weight=language_weight)
    start = rl_loop.restore(learner, ckpt) if ckpt is not None else 0
    d.mkdir(parents=True, exist_ok=True)
    runlog = RunLog(d, cfg.report_to, start, config=to_dict(cfg))
    engine = rl_loop.make_engine(learner.sampler, tok, s, d, max(256, cfg.prompts_per_step * cfg.group_size))
    prompts = Prompts(task.examples("train"), lambda ex: task.prompt(ex, tok))
    rl_loop.train(learner, engine, prompts, RewardRunner(task), s, rl_loop.Schedule(steps, 0, cfg.save_every, 10), d,
                  runlog, tok, None, start, d.name)
    runlog.close()
    if distributed.is_main():
        save_pretrained_atomic(learner.sampler, tok, d / "final")
    distributed.barrier()  # the stage's model is on disk before any rank evaluates it
    return {"final_model": str(d / "final"), "steps": steps, "task": task_spec}


def rejection_sft(cfg: Config, src: str, base: str, d: Path, device: str) -> dict:
    """Stage 2's correct, readable samples (+ non-reasoning rows) -> SFT of the base model."""
    rows_file = d / "rows.jsonl"
    if rows_file.is_file():  # sampled before an interruption: train on the same rows
        rows = [json.loads(x) for x in rows_file.read_text().splitlines()]
        picked = json.loads((d / "rows.summary.json").read_text())
    else:
        task = _task(cfg, cfg.task)
        tok = load_tokenizer(src)
        model = load_model(src, device=device)
        train = task.examples("train")
        examples = random.Random(f"rs-{cfg.seed}").sample(train, min(cfg.rs_prompts, len(train)))
        params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p, 0, ("</answer>",), seed=cfg.seed)
        groups = sample_groups(task, tok, HFEngine(model, tok), RewardRunner(task), examples, cfg.rs_k, params,
                               desc="rejection sampling")
        rules = Rules(max_per_prompt=cfg.rs_max_per_prompt, language=cfg.language, non_reasoning=cfg.non_reasoning)
        rows, picked = select(groups, task, rules, random.Random(cfg.seed), tok)
        if not rows:
            raise ConfigError("rejection sampling kept no row: stage 2's model solved nothing readable")
        d.mkdir(parents=True, exist_ok=True)
        if distributed.is_main():
            rows_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            (d / "rows.summary.json").write_text(json.dumps(picked, indent=2))
    return sft_on(cfg, base, rows, d, device) | {"rows": len(rows), "selection": picked}


def held_out(cfg: Config, model_dir: str, device: str) -> dict:
    task = _task(cfg, cfg.final_task)
    tok = load_tokenizer(model_dir)
    model = load_model(model_dir, device=device)
    params = SamplingParams(cfg.max_new_tokens, 0.6, 0.95, 0, ("</answer>",), seed=cfg.seed)
    metrics, _ = evaluate(model, tok, task, task.examples("test")[: cfg.eval_problems], cfg.eval_k, params,
                          progress=False)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def write_report(out: Path, rows: list[dict]) -> None:
    """r1_report.md: one column per stage, the metrics R1 reports plus readability."""
    keys = ["pass@1"] + sorted(k for k in rows[0] if k.endswith("/pass@1")) + [
        "mean_length", "reflection_rate", "language_consistency", "mixed_language_share", "format_rate"]
    lines = ["# r1lab r1: stage by stage", "", "| metric | " + " | ".join(r["stage"] for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, ""))
                                              for r in rows) + " |")
    (out / "r1_report.md").write_text("\n".join(lines) + "\n")
