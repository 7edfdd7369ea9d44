"""ReasoningDriver: a DeepSeek-V3 language model that reasons about the scene, then plans, trained
in R1's order (cold-start SFT, then GRPO) and driven closed-loop in highway-env (issue 15).

    r1lab drive-lm --output-dir runs/lm-driver
    r1lab drive-lm --output-dir runs/lm-driver --resume         # a finished stage is never redone

The flow of ``run``, one folder per stage:
  1-data   IDM/MOBIL drives ``log_episodes`` training start states (``driving.rollout.expert_logs``);
           each decision becomes an SFT row: the scene as text, then ``<think>`` (``--template r1``
           puts R1-Zero's instruction before it, doubling the tokens) -> templated
           reasoning (situation, other agents, plan, safety check) + the expert's plan
           (``driving.reasoner``).
  2-model  a byte-level BPE tokenizer over that text (``tokenizers``) and a tiny
           ``DeepseekV3ForCausalLM`` (MLA attention, 1 shared + E routed experts), saved with
           ``save_pretrained``: it loads in plain transformers.
  3-sft    cold start: ``train.sft_loop.fit`` (response-only loss); V3's routing bias moves after
           every step (``moe.RouterBalancer``, which transformers does not do). 40 epochs (~1,100
           steps): with 3 (126 steps) the 2-layer model answered the commonest plan whatever the
           scene (plan = expert's on 37% of held-out decisions, the commonest plan's share) and
           its next-token distribution after "I drive at" did not depend on the scene's speed; with
           ~1,100 steps at lr 1e-3 it restates the speed in 85% and agrees with the expert on 73%
           (copying a number from the prompt needs attention that only forms after many steps).
  4-grpo   the ``drive`` task through the same RL loop as ``r1lab zero`` (``rl.loop.train``): a
           completion's plan is graded by driving it from the start state for ``horizon`` seconds;
           reward = driving reward + format.
  5-eval   closed loop on the held-out start states: the model decides every second (greedy) for
           the whole episode, for the SFT and the GRPO model; reward, collision and progress per
           category; reasoning samples early and late; how often the stated safety check matched
           what happened in the next 3 s; compute per decision. ``drive_lm_report.md``.

An unparseable plan ends its episode as a failure (reward 0), never the run.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from r1lab import runtime
from r1lab.config import ConfigError, to_dict
from r1lab.driving import reasoner
from r1lab.driving.env import CATEGORIES, DECISION_STEPS
from r1lab.driving.pool import EpisodePool
from r1lab.driving.rollout import expert_logs, held_out_starts, summarise, train_starts
from r1lab.engine.rollout import HFEngine, SamplingParams
from r1lab.models import load_model, load_tokenizer, quiet_hf, save_pretrained_atomic
from r1lab.rewards.format import parse_response
from r1lab.rewards.safe import RewardRunner
from r1lab.rl import loop as rl_loop
from r1lab.rl.collect import Prompts
from r1lab.rl.settings import RLSettings
from r1lab.tasks import get_task
from r1lab.tasks.base import render_prompt
from r1lab.train import checkpoint, stages
from r1lab.train.sft import tokenize
from r1lab.train.sft_loop import SFTSettings, fit
from r1lab.train.tracking import RunLog

HELP = "ReasoningDriver: a DeepSeek-V3 LM that reasons about the scene, then plans (SFT -> GRPO -> closed loop)"


@dataclass
class Config:
    """``r1lab drive-lm``: every stage's settings."""

    output_dir: str = field(default="runs/lm-driver", metadata={"help": "run directory (one folder per stage)"})
    categories: str = field(default="highway,urban,roundabout", metadata={"help": "scenario categories"})
    duration: float = field(default=10.0, metadata={"help": "closed-loop episode length in seconds"})
    seed: int = field(default=0, metadata={"help": "seed"})
    workers: int = field(default=1, metadata={"help": "environment processes for logging and evaluation"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads"})
    log_episodes: int = field(default=90, metadata={"help": "IDM/MOBIL episodes for the cold-start rows"})
    template: str = field(default="short", metadata={
        "help": "prompt: short (the scene, then <think>) | r1 (R1-Zero's instruction before the scene: 2x the tokens)"})
    vocab_size: int = field(default=512, metadata={"help": "tokenizer vocabulary"})
    hidden: int = field(default=64, metadata={"help": "model width"})
    layers: int = field(default=2, metadata={"help": "decoder layers (all MoE)"})
    n_routed: int = field(default=8, metadata={"help": "routed experts per layer"})
    experts_per_token: int = field(default=2, metadata={"help": "routed experts per token"})
    sft_epochs: int = field(default=40, metadata={"help": "cold-start epochs (see the module docstring)"})
    sft_lr: float = field(default=1e-3, metadata={"help": "cold-start peak learning rate"})
    tokens_per_step: int = field(default=4096, metadata={"help": "cold-start tokens per step"})
    steps: int = field(default=20, metadata={"help": "GRPO steps"})
    prompts_per_step: int = field(default=8, metadata={"help": "GRPO start states per step"})
    group_size: int = field(default=8, metadata={"help": "GRPO completions per start state"})
    max_new_tokens: int = field(default=96, metadata={"help": "completion length limit"})
    lr: float = field(default=3e-4, metadata={"help": "GRPO learning rate"})
    horizon: float = field(default=3.0, metadata={"help": "GRPO: seconds a plan is driven when graded"})
    router_bias_gamma: float = field(default=1e-3, metadata={"help": "V3 routing-bias update speed γ"})
    eval_starts: int = field(default=20, metadata={"help": "held-out start states per category (r1lab drive's 20)"})
    resume: bool = field(default=False, metadata={"help": "continue an interrupted run"})

    def validate(self) -> None:
        cats = [c.strip() for c in self.categories.split(",") if c.strip()]
        if not cats or any(c not in CATEGORIES for c in cats):
            raise ConfigError(f"categories: choose from {', '.join(CATEGORIES)}, got {self.categories!r}")
        if min(self.log_episodes, self.sft_epochs, self.prompts_per_step, self.eval_starts) < 1 or self.steps < 0:
            raise ConfigError("log_episodes, sft_epochs, prompts_per_step and eval_starts must be >= 1, steps >= 0")
        if self.template not in ("short", "r1"):
            raise ConfigError(f"template must be short | r1 (both open the think block), not {self.template!r}")
        if self.group_size < 2:
            raise ConfigError("group_size must be >= 2 (GRPO needs a group)")
        if (Path(self.output_dir) / "config.json").is_file() and not self.resume:
            raise ConfigError(f"{self.output_dir} already holds a run; pass --resume or choose another --output-dir")

    def cats(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.categories.split(",") if c.strip())


def run(cfg: Config) -> dict:
    cfg.validate()
    runtime.configure(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    with EpisodePool(cfg.workers) as pool:
        rows = stage_data(cfg, pool, out / "1-data")
        stage_model(cfg, rows, out / "2-model")
        sft = stage_sft(cfg, rows, out / "3-sft")
        rl = stage_grpo(cfg, out / "4-grpo")
        result = stage_eval(cfg, pool, out / "5-eval", {"sft": sft["model"], "grpo": rl["model"]})
    write_report(out, result)
    print(json.dumps({k: v["all"] for k, v in result["metrics"].items()}))
    return result


def stage_data(cfg: Config, pool: EpisodePool, stage: Path) -> list[dict]:
    if stages.done(stage) is None:
        stage.mkdir(parents=True, exist_ok=True)
        logs, _ = expert_logs(pool, train_starts(np.random.default_rng(cfg.seed), cfg.log_episodes, cfg.cats()),
                              cfg.duration)
        rows = [{"prompt": render_prompt(reasoner.scene_text(o, cfg.duration), cfg.template),
                 "response": reasoner.completion(o, a)} for ep in logs for o, a, _ in ep]
        (stage / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        stages.finish(stage, {"rows": len(rows), "episodes": len(logs)})
    return [json.loads(x) for x in (stage / "rows.jsonl").read_text().splitlines()]


def stage_model(cfg: Config, rows: list[dict], stage: Path) -> None:
    if stages.done(stage) is not None:
        return
    from transformers import DeepseekV3ForCausalLM

    tok = reasoner.build_tokenizer([r["prompt"] + r["response"] for r in rows], cfg.vocab_size)
    model = DeepseekV3ForCausalLM(reasoner.tiny_config(len(tok), tok.pad_token_id, tok.eos_token_id,
                                                       hidden=cfg.hidden, layers=cfg.layers, n_routed=cfg.n_routed,
                                                       top_k=cfg.experts_per_token))
    save_pretrained_atomic(model, tok, stage / "init")
    stages.finish(stage, {"params": sum(p.numel() for p in model.parameters()), "active_params": active_params(model),
                    "vocab": len(tok)})


def active_params(model: torch.nn.Module) -> int:
    """Parameters one token uses: all, less the routed experts it is not sent to."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n)
    return int(total - routed * (1 - cfg.num_experts_per_tok / cfg.n_routed_experts))


def stage_sft(cfg: Config, rows: list[dict], stage: Path) -> dict:
    if (info := stages.done(stage)) is not None:
        return info
    src = stage.parent / "2-model" / "init"
    ckpt = checkpoint.latest(stage) if cfg.resume else None
    tok = load_tokenizer(src)
    model = load_model(str(ckpt / "policy") if ckpt else src).train()
    order = np.random.default_rng(cfg.seed).permutation(len(rows))
    n_eval = max(1, len(rows) // 20)
    train_ex, _ = tokenize([rows[i] for i in order[n_eval:]], tok, "raw", 1024)
    eval_ex, _ = tokenize([rows[i] for i in order[:n_eval]], tok, "raw", 1024)
    s = SFTSettings(epochs=cfg.sft_epochs, lr=cfg.sft_lr, warmup=5, tokens_per_step=cfg.tokens_per_step,
                    eval_every=0, save_every=20, report_to="none", seed=cfg.seed, resume=cfg.resume,
                    router_bias_gamma=cfg.router_bias_gamma)
    summary = fit(model, tok, train_ex, eval_ex, s, stage, ckpt, to_dict(cfg))
    return stages.finish(stage, {**summary, "model": str(stage / "final")})


def stage_grpo(cfg: Config, stage: Path) -> dict:
    if (info := stages.done(stage)) is not None:
        return info
    stage.mkdir(parents=True, exist_ok=True)
    s = RLSettings(prompts_per_step=cfg.prompts_per_step, group_size=cfg.group_size, max_new_tokens=cfg.max_new_tokens,
                   lr=cfg.lr, warmup=2, seed=cfg.seed, router_bias_gamma=cfg.router_bias_gamma, micro_batch_tokens=0)
    s.validate()
    ckpt = checkpoint.latest(stage) if cfg.resume else None
    learner, tok = rl_loop.load_learner(str(stage.parent / "3-sft" / "final"), ckpt, s, "cpu")
    task = get_task("drive", categories=cfg.categories, horizon=cfg.horizon, template=cfg.template)
    prompts = Prompts(task.examples("train"), lambda ex: task.prompt(ex, tok), stop=("</answer>",))
    engine = HFEngine(learner.sampler, tok, max_batch=cfg.prompts_per_step * cfg.group_size)
    start = rl_loop.restore(learner, ckpt) if ckpt is not None else 0
    runlog = RunLog(stage, "none", start)
    rl_loop.train(learner, engine, prompts, RewardRunner(task), s,
                  rl_loop.Schedule(cfg.steps, 0, 5, 5), stage, runlog, tok, None, start, "4-grpo")
    runlog.close()
    save_pretrained_atomic(learner.policy, tok, stage / "final")
    return stages.finish(stage, {"steps": cfg.steps, "model": str(stage / "final")})


@torch.no_grad()
def drive_closed_loop(model_dir: str, pool: EpisodePool, cfg: Config) -> dict:
    """The LM decides every second on every held-out start (greedy); returns metrics and samples."""
    with quiet_hf():
        tok, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    engine = HFEngine(model, tok)
    starts = held_out_starts(cfg.eval_starts, cfg.cats())
    obs = pool.reset([{**s, "duration": cfg.duration} for s in starts])
    live = {i: o for i, o in obs.items() if o is not None}
    failed, decisions, tokens, verdicts = set(), [], [], {}
    step = 0
    while live:
        slots = sorted(live)
        texts = [render_prompt(reasoner.scene_text(live[i], cfg.duration), cfg.template) for i in slots]
        result = engine.generate(texts, SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0))
        anchors = {}
        for i, sample in zip(slots, result.samples):
            answer = parse_response(sample.text, True).answer
            anchor = reasoner.parse_plan(answer.strip() if answer else None)
            tokens.append(len(sample.prompt_ids) + len(sample.completion_ids))
            decisions.append({"slot": i, "step": step, "category": starts[i]["category"], "text": sample.text,
                              "plan": answer})
            if anchor is None:
                failed.add(i)
            else:
                anchors[i] = anchor
                verdicts[(i, step)] = "too close" not in sample.text.split("Safety:")[-1] if "Safety:" in sample.text else None
        outcome = pool.decide(anchors) if anchors else {}
        live = {i: o for i, (o, done) in outcome.items() if not done and o is not None}
        step += 1
    traces = pool.summary(list(range(len(starts))))
    from r1lab.driving.reward import episode_reward

    scored = [episode_reward(traces[i]) for i in range(len(starts))]
    rewards = [0.0 if i in failed else r for i, (r, _) in enumerate(scored)]
    comps = [{**c, "unparseable": float(i in failed)} for i, (_, c) in enumerate(scored)]
    match = []
    for (i, t), safe in verdicts.items():
        if safe is None:
            continue
        crash_step = len(traces[i]["speed"]) if traces[i]["crashed"] else None
        crashed_soon = crash_step is not None and crash_step <= (t + 3) * DECISION_STEPS
        match.append(float(safe == (not crashed_soon)))
    flops = 2 * active_params(model) * float(np.mean(tokens)) if tokens else 0.0
    return {"metrics": summarise(comps, [s["category"] for s in starts], rewards),
            "safety_check_match": float(np.mean(match)) if match else None,
            "tokens_per_decision": float(np.mean(tokens)) if tokens else 0.0, "flops_per_decision": flops,
            "samples": decisions[:3] + decisions[-3:]}


def plan_agreement(model_dir: str, decisions: list[tuple], cfg: Config) -> dict[str, float]:
    """Does the model read the scene? On the expert's own held-out decisions (IDM/MOBIL driving
    the held-out start states), the share of greedy plans equal to the expert's, the share whose
    reasoning restates the ego speed of the scene, and what always answering the most common
    cold-start plan would score."""
    with quiet_hf():
        tok, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    prompts = [render_prompt(reasoner.scene_text(o, cfg.duration), cfg.template) for o, _ in decisions]
    samples = HFEngine(model, tok).generate(prompts, SamplingParams(cfg.max_new_tokens, temperature=0.0)).samples
    same, speed = 0, 0
    for (obs, anchor), sample in zip(decisions, samples):
        answer = parse_response(sample.text, True).answer
        same += reasoner.parse_plan(answer.strip() if answer else None) == anchor
        speed += f"I drive at {obs['ego'][0] * 30:.0f} m/s" in sample.text
    return {"plan_agreement": same / max(1, len(decisions)), "speed_restated": speed / max(1, len(decisions))}


def stage_eval(cfg: Config, pool: EpisodePool, stage: Path, models: dict[str, str]) -> dict:
    if (info := stages.done(stage)) is not None:
        return info
    stage.mkdir(parents=True, exist_ok=True)
    out = {"metrics": {}, "extra": {}}
    logs, _ = expert_logs(pool, held_out_starts(cfg.eval_starts, cfg.cats()), cfg.duration)
    decisions = [(o, a) for ep in logs for o, a, _ in ep]
    rows = [json.loads(x) for x in (stage.parent / "1-data" / "rows.jsonl").read_text().splitlines()]
    common = Counter(r["response"].rsplit("<answer>", 1)[-1] for r in rows).most_common(1)[0][0]
    majority = sum(common == f"{reasoner.plan_text(a)}</answer>" for _, a in decisions) / max(1, len(decisions))
    for name, path in models.items():
        t = time.time()
        res = drive_closed_loop(path, pool, cfg)
        out["metrics"][name] = res.pop("metrics")
        out["extra"][name] = {**res, **plan_agreement(path, decisions, cfg), "majority_plan_agreement": majority,
                              "seconds": time.time() - t}
    return stages.finish(stage, out)


def write_report(out: Path, result: dict) -> Path:
    cols = ("reward", "collision", "progress", "comfort", "unparseable")
    lines = ["# r1lab drive-lm report", "", f"Run: `{out}`", "", "## Closed loop on held-out start states (greedy)", "",
             "| model | category | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for name, by in result["metrics"].items():
        for cat, row in by.items():
            lines.append(f"| {name} | {cat} | " + " | ".join(f"{row.get(k, float('nan')):.3f}" for k in cols) + " |")
    lines += ["", "| model | plan = expert's (held-out decisions) | always the commonest plan | reasoning restates "
              "the speed | safety check matched | tokens / decision | forward FLOPs / decision |",
              "|---|---|---|---|---|---|---|"]
    for name, ex in result["extra"].items():
        match = "n/a" if ex["safety_check_match"] is None else f"{ex['safety_check_match']:.3f}"
        lines.append(f"| {name} | {ex.get('plan_agreement', float('nan')):.3f} | "
                     f"{ex.get('majority_plan_agreement', float('nan')):.3f} | {ex.get('speed_restated', float('nan')):.3f} | "
                     f"{match} | {ex['tokens_per_decision']:.0f} | {ex['flops_per_decision']:.3g} |")
    for name, ex in result["extra"].items():
        lines += ["", f"## Reasoning samples, {name} (first and last decisions)", ""]
        for s in ex["samples"]:
            lines += [f"{s['category']}, decision {s['step']}:", "", "```", s["text"], "```", ""]
    path = out / "drive_lm_report.md"
    path.write_text("\n".join(lines))
    return path
