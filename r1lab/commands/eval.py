"""Evaluate a model on a task: k samples per problem, pass@1, cons@k, pass@k.

    r1lab eval                                            # shipped base, countdown, k=8
    r1lab eval --model Qwen/Qwen2.5-0.5B --task gsm8k --data ../shared/data/gsm8k/test.jsonl \\
               --template chat --k 16 --limit 200 --max-new-tokens 1024

As R1 reports it: k samples per problem at temperature 0.6, top-p 0.95; pass@1 is the mean
correctness over all k samples (then over problems), cons@k the correctness of the majority
answer, pass@k the unbiased estimator 1 − C(n−c,k)/C(n,k). Writes ``eval.json`` (metrics +
every sample) and ``eval.md`` to ``--output-dir``, and prints the metrics as one JSON object
on the last line. Sampling goes through ``r1lab.engine.rollout`` — the same engine GRPO trains with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from r1lab import distributed
from r1lab.config import ConfigError, to_dict
from r1lab.engine.rollout import SamplingParams
from r1lab.evaluation.evaluate import evaluate
from r1lab.models import load_model, load_tokenizer
from r1lab.tasks import TASKS, check_spec, get_task, task_kwargs

HELP = "sample k responses per problem and report pass@1, cons@k, pass@k"


@dataclass
class Config:
    model: str = field(default="", metadata={"help": "model directory or hub id ('' = shipped base)"})
    task: str = field(default="countdown", metadata={
        "help": " | ".join(TASKS) + ", or a mixture such as countdown:0.5,knights_knaves:0.5"})
    data: str = field(default="", metadata={"help": "data file or hub dataset id (gsm8k, math)"})
    split: str = field(default="test", metadata={"help": "which split to evaluate"})
    template: str = field(default="", metadata={"help": "prompt template ('' = the task's default)"})
    task_options: list[str] = field(default_factory=list, metadata={
        "help": "task options KEY=VALUE (e.g. max_people=5 for knights_knaves, seed=1)"})
    sandbox_min_level: str = field(default="", metadata={
        "help": "code task: refuse to grade below this containment level (process | seccomp | namespaces | full)"})
    language: str = field(default="", metadata={"help": "target language ('' = task default)"})
    k: int = field(default=8, metadata={"help": "samples per problem"})
    temperature: float = field(default=0.6, metadata={"help": "sampling temperature"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling (0 = off)"})
    max_new_tokens: int = field(default=192, metadata={"help": "completion length limit"})
    limit: int = field(default=0, metadata={"help": "evaluate the first N problems (0 = all)"})
    batch_size: int = field(default=256, metadata={"help": "sequences decoded at once"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    device: str = field(default="auto", metadata={"help": "cpu | cuda | auto"})
    output_dir: str = field(default="runs/eval", metadata={"help": "where eval.json / eval.md go"})

    def validate(self) -> None:
        check_spec(self.task)
        if self.k < 1:
            raise ConfigError("k must be >= 1")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p must be in (0, 1]")
        if self.temperature < 0:
            raise ConfigError("temperature must be >= 0")


def write_markdown(path: Path, cfg: Config, metrics: dict, records: list[dict]) -> None:
    lines = [f"# r1lab eval: {cfg.task} on {cfg.model or 'shipped base'}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    lines += ["", "## Sample completions", ""]
    for r in records[:5]:
        lines += [f"**{r['id']}** (gold {r['answer']}): correct {r['correct'][0]}", "", "```", r["prompt"] + r["responses"][0], "```", ""]
    path.write_text("\n".join(lines))


def run(cfg: Config) -> dict:
    device = distributed.init(cfg.device)  # under torchrun each rank samples a block of the problems
    task = get_task(cfg.task, **task_kwargs(cfg))
    examples = task.examples(cfg.split)
    if cfg.limit:
        examples = examples[: cfg.limit]
    if not examples:
        raise ConfigError(f"task {cfg.task!r} split {cfg.split!r} has no examples")
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, device=device)
    torch.manual_seed(cfg.seed)
    params = SamplingParams(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        seed=cfg.seed,
    )
    metrics, records = evaluate(model, tokenizer, task, examples, cfg.k, params, cfg.batch_size)
    if not distributed.is_main():
        distributed.close()
        return metrics
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"metrics": metrics, "config": to_dict(cfg), "task": task.describe(), "records": records}
    (out_dir / "eval.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    write_markdown(out_dir / "eval.md", cfg, metrics, records)
    print(json.dumps({"task": cfg.task, "model": cfg.model or "default", **metrics}))
    distributed.close()
    return metrics
