"""Rejection sampling: k samples per prompt from any model, graded, kept by rule, written as SFT rows.

    r1lab sample --model runs/r1-stage2/final --task countdown --k 8 --output data/rs.jsonl
    r1lab sample --task countdown --keep correct --max-per-prompt 2 --hindsight 0.2 --non-reasoning 0.33
    r1lab sft --data data/rs.jsonl --output-dir runs/sft          # then fine-tune on them

The flow of ``run``: load the model and the task -> take ``prompts`` training examples -> for each
chunk of prompts: k samples through the rollout engine (the one GRPO trains with), each scored
by the task's reward (a raising or hanging reward scores 0) -> ``train.rejection.select`` keeps
the correct (or top-n) samples, drops unreadable ones (mixed languages, long paragraphs, code
blocks outside code tasks, broken tags, over-long), duplicates and those over
``max_per_prompt``, and adds hindsight-relabelled failures, varying-start-state rows and
non-reasoning answers, each capped -> ``--output`` (JSONL: prompt, response, source, id, task,
reward) and ``--output``'s ``.summary.json``: provenance (model, task, settings) and what each
rule removed. The rows are ``r1lab sft``'s input as they are (``--template raw``).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from r1lab import distributed
from r1lab.config import ConfigError, to_dict
from r1lab.engine.rollout import HFEngine, SamplingParams
from r1lab.evaluation.readability import Limits
from r1lab.models import load_model, load_tokenizer, resolve_model
from r1lab.rewards.safe import RewardRunner
from r1lab.tasks import TASKS, check_spec, get_task, task_kwargs
from r1lab.train.rejection import RULES_HELP, Rules, sample_groups, select

HELP = "rejection sampling: k samples per prompt, graded, filtered, written as an SFT dataset"


@dataclass
class Config:
    model: str = field(default="", metadata={"help": "model: directory or hub id ('' = shipped base)"})
    task: str = field(default="countdown", metadata={"help": " | ".join(TASKS) + ", or a mixture"})
    data: str = field(default="", metadata={"help": "data file or hub id for gsm8k / math / code / ..."})
    split: str = field(default="train", metadata={"help": "which split's prompts to sample"})
    template: str = field(default="", metadata={"help": "prompt template ('' = task default)"})
    language: str = field(default="", metadata={"help": "target language ('' = task default)"})
    task_options: list[str] = field(default_factory=list, metadata={"help": "task options KEY=VALUE"})
    prompts: int = field(default=500, metadata={"help": "prompts to sample (0 = all of the split)"})
    k: int = field(default=8, metadata={"help": "samples per prompt"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling"})
    max_new_tokens: int = field(default=192, metadata={"help": "completion length limit"})
    keep: str = field(default="correct", metadata={"help": "correct | top (the top_n rewards of each prompt)"})
    top_n: int = field(default=1, metadata={"help": "with keep = top: samples kept per prompt"})
    max_per_prompt: int = field(default=4, metadata={"help": "at most this many rows per prompt"})
    dedupe: bool = field(default=True, metadata={"help": "drop a completion already kept for its prompt"})
    filters: list[str] = field(default_factory=lambda: ["tags", "mixed_language", "long_paragraph", "code_block",
                                                        "too_long"], metadata={"help": RULES_HELP})
    min_consistency: float = field(default=0.95, metadata={"help": "mixed_language: least language consistency"})
    max_paragraph: int = field(default=1200, metadata={"help": "long_paragraph: most characters in a paragraph"})
    max_chars: int = field(default=0, metadata={"help": "too_long: most characters in a response (0 = no limit)"})
    hindsight: float = field(default=0.0, metadata={
        "help": "cap of goal-relabelled failures, as a share of the kept rows (Countdown: target := value reached)"})
    start_state: float = field(default=0.0, metadata={
        "help": "cap of varying-start-state rows (a correct solution's first steps moved into the prompt)"})
    non_reasoning: float = field(default=0.0, metadata={
        "help": "cap of non-reasoning rows (the answer with an empty think block); R1: ~0.33 (200k : 600k)"})
    output: str = field(default="runs/sample/rows.jsonl", metadata={"help": "JSONL rows to write"})
    batch_size: int = field(default=256, metadata={"help": "sequences decoded at once"})
    reward_timeout: float = field(default=5.0, metadata={"help": "seconds before a reward call scores 0"})
    seed: int = field(default=0, metadata={"help": "seed of prompt choice and sampling"})
    device: str = field(default="auto", metadata={"help": "cpu | cuda | auto"})

    def validate(self) -> None:
        check_spec(self.task)
        if self.k < 1 or self.max_per_prompt < 1 or self.top_n < 1 or self.prompts < 0:
            raise ConfigError("k, max_per_prompt and top_n must be >= 1, prompts >= 0")
        if self.keep not in ("correct", "top"):
            raise ConfigError(f"keep must be correct | top, not {self.keep!r}")
        bad = [f for f in self.filters if f not in Rules().filters]
        if bad:
            raise ConfigError(f"unknown filter {bad[0]!r}; filters: {', '.join(Rules().filters)}")
        if min(self.hindsight, self.start_state, self.non_reasoning) < 0 or self.temperature <= 0:
            raise ConfigError("hindsight, start_state and non_reasoning must be >= 0, temperature > 0")
        if not self.output:
            raise ConfigError("give --output FILE.jsonl")


def run(cfg: Config) -> dict:
    cfg.validate()
    torch.manual_seed(cfg.seed)
    device = distributed.init(cfg.device)  # under torchrun each rank samples a block of the prompts
    task = get_task(cfg.task, **task_kwargs(cfg))
    examples = task.examples(cfg.split)
    if cfg.prompts and cfg.prompts < len(examples):
        examples = random.Random(f"sample-{cfg.seed}").sample(examples, cfg.prompts)
    if not examples:
        raise ConfigError(f"task {cfg.task!r} split {cfg.split!r} has no examples")
    tok = load_tokenizer(cfg.model)
    model = load_model(cfg.model, device=device)
    engine = HFEngine(model, tok, max_batch=cfg.batch_size)
    rewards = RewardRunner(task, None, cfg.reward_timeout)
    params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p, 0, ("</answer>",), seed=cfg.seed)
    groups = sample_groups(task, tok, engine, rewards, examples, cfg.k, params, cfg.batch_size)
    rules = Rules(keep=cfg.keep, top_n=cfg.top_n, max_per_prompt=cfg.max_per_prompt, dedupe=cfg.dedupe,
                  filters=tuple(cfg.filters), limits=Limits(cfg.min_consistency, cfg.max_paragraph, cfg.max_chars),
                  language=cfg.language, hindsight=cfg.hindsight, start_state=cfg.start_state,
                  non_reasoning=cfg.non_reasoning)
    rows, summary = select(groups, task, rules, random.Random(f"select-{cfg.seed}"), tok)
    if not distributed.is_main():
        distributed.close()
        return summary
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    summary.update(output=str(out), reward_errors=rewards.total_errors, reward_timeouts=rewards.total_timeouts,
                   pass_rate=sum(c.correct for g in groups for c in g) / max(1, sum(len(g) for g in groups)))
    provenance = {"model": cfg.model or "default", "resolved_model": resolve_model(cfg.model), "task": task.describe(),
                  "config": to_dict(cfg), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **summary}
    out.with_suffix(".summary.json").write_text(json.dumps(provenance, indent=2, ensure_ascii=False))
    print(json.dumps(summary, ensure_ascii=False))
    distributed.close()
    return summary
