"""GRPO for waypoint planning in highway-env with a DeepSeek-V3-style MoE policy, in the seed's
stages, each in its own folder under the run (a finished stage is never redone; GRPO resumes
from its last checkpoint after kill -9):

    r1lab drive --recipe recipes/drive.toml --output-dir runs/drive
    r1lab drive --output-dir runs/drive --resume            # after an interruption
    r1lab drive --dense true --output-dir runs/dense         # the equal-active-parameter baseline

The flow of ``run``:
  1-logs   IDM/MOBIL drives ``log_episodes`` training start states; every decision is labelled
           with the nearest codebook anchor (``Episode.expert_samples``); IDM/MOBIL also drives
           the held-out start states: the baseline row of the report.
  2-ssl    JEPA pretraining of the scene encoder on the logged scenes (skipped with --ssl-steps 0).
  3-bc     behaviour cloning of the anchors; held-out evaluation.
  4-grpo   for each step: B start states × G rollouts (``collect``) -> episode rewards ->
           advantages (same-state groups, or per category) -> μ epochs of the clipped loss with the
           routing fixed (``learn.update``) -> V3 bias update -> log; held-out evaluation every
           ``eval_every`` steps; atomic checkpoints.
  report   ``drive_report.md``: reward components, collision rate, progress, comfort per
           category for IDM, BC and GRPO; expert load and specialisation; rendered frames.

Environments run in ``workers`` processes (``driving.pool``); the policy decides for all live
episodes at once in this process.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from r1lab import runtime
from r1lab.config import ConfigError, to_dict
from r1lab.driving import report as drive_report
from r1lab.driving.env import CATEGORIES
from r1lab.driving.learn import UpdateSettings, bc_accuracy, bc_fit, ssl_fit, update
from r1lab.driving.policy import DriverConfig, DriverPolicy
from r1lab.driving.pool import EpisodePool
from r1lab.driving.rollout import collect, expert_logs, expert_stats, held_out_starts, summarise, train_starts
from r1lab.models import quiet_hf
from r1lab.train import checkpoint, stages
from r1lab.train.tracking import RunLog

HELP = "GRPO for waypoint planning in highway-env with a V3 mixture-of-experts policy (SSL -> BC -> GRPO)"


@dataclass
class Config:
    """``r1lab drive``: every stage's settings."""

    output_dir: str = field(default="runs/drive", metadata={"help": "run directory (one folder per stage)"})
    categories: str = field(default="highway,urban,roundabout", metadata={"help": "scenario categories"})
    duration: float = field(default=10.0, metadata={"help": "episode length in seconds (one decision per second)"})
    seed: int = field(default=0, metadata={"help": "seed of start states, initialisation and sampling"})
    workers: int = field(default=2, metadata={"help": "environment processes (0 = in this process)"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads"})
    # policy
    dim: int = field(default=64, metadata={"help": "policy width D"})
    hidden: int = field(default=64, metadata={"help": "width of one expert"})
    layers: int = field(default=2, metadata={"help": "MoE blocks"})
    n_routed: int = field(default=8, metadata={"help": "routed experts E"})
    experts_per_token: int = field(default=2, metadata={"help": "routed experts per decision K"})
    n_shared: int = field(default=1, metadata={"help": "shared experts (always on)"})
    dense: bool = field(default=False, metadata={"help": "dense SwiGLU of equal active parameters instead of MoE"})
    balance_alpha: float = field(default=0.0, metadata={"help": "sequence-wise balance loss α (0 = bias only)"})
    bias_gamma: float = field(default=1e-3, metadata={"help": "V3 bias update speed γ (0 = no bias balancing)"})
    # stage 1-3
    log_episodes: int = field(default=90, metadata={"help": "IDM/MOBIL episodes logged for SSL and BC"})
    ssl_steps: int = field(default=300, metadata={"help": "JEPA steps (0 = skip SSL pretraining)"})
    bc_epochs: int = field(default=15, metadata={"help": "behaviour-cloning epochs"})
    bc_lr: float = field(default=1e-3, metadata={"help": "SSL and BC learning rate"})
    # stage 4
    steps: int = field(default=30, metadata={"help": "GRPO steps"})
    starts_per_step: int = field(default=6, metadata={"help": "B: start states per step"})
    group_size: int = field(default=8, metadata={"help": "G: rollouts per start state"})
    algo: str = field(default="grpo", metadata={"help": "grpo | ppo (value head as the baseline)"})
    grouping: str = field(default="state", metadata={"help": "state (G rollouts of one start) | category"})
    scale: str = field(default="none", metadata={"help": "advantage scale: none (fixed scale: r − mean) | group | batch"})
    lr: float = field(default=1e-3, metadata={"help": "GRPO learning rate"})
    epochs: int = field(default=2, metadata={"help": "μ: passes over each rollout"})
    minibatches: int = field(default=2, metadata={"help": "minibatches per pass"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    eval_every: int = field(default=10, metadata={"help": "held-out evaluation every N steps"})
    eval_starts: int = field(default=20, metadata={"help": "held-out start states per category"})
    save_every: int = field(default=5, metadata={"help": "checkpoint every N steps"})
    frames: bool = field(default=True, metadata={"help": "render held-out episodes into the report"})
    resume: bool = field(default=False, metadata={"help": "continue an interrupted run"})
    report_to: str = field(default="none", metadata={"help": "tensorboard | wandb | trackio | none"})

    def validate(self) -> None:
        cats = self.category_list()
        bad = [c for c in cats if c not in CATEGORIES]
        if bad or not cats:
            raise ConfigError(f"categories: unknown {bad or cats}; choose from {', '.join(CATEGORIES)}")
        if self.algo not in ("grpo", "ppo"):
            raise ConfigError(f"algo must be grpo | ppo, not {self.algo!r}")
        if self.grouping not in ("state", "category"):
            raise ConfigError(f"grouping must be state | category, not {self.grouping!r}")
        if self.scale not in ("group", "batch", "none"):
            raise ConfigError(f"scale must be group | batch | none, not {self.scale!r}")
        if self.group_size < 2 and self.grouping == "state":
            raise ConfigError("group_size must be ≥ 2 for same-state groups")
        if min(self.duration, self.steps + 1, self.starts_per_step, self.log_episodes, self.eval_starts) <= 0:
            raise ConfigError("duration, starts_per_step, log_episodes and eval_starts must be > 0, steps ≥ 0")
        if self.experts_per_token > self.n_routed:
            raise ConfigError(f"experts_per_token {self.experts_per_token} > n_routed {self.n_routed}")
        run = Path(self.output_dir)
        if (run / "config.json").is_file() and not self.resume:
            raise ConfigError(f"{run} already holds a run; pass --resume to continue it or choose another --output-dir")

    def category_list(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.categories.split(",") if c.strip())

    def update_settings(self) -> UpdateSettings:
        return UpdateSettings(algo=self.algo, grouping=self.grouping, scale=self.scale, epochs=self.epochs,
                              minibatches=self.minibatches, temperature=self.temperature, bias_gamma=self.bias_gamma)


def run(cfg: Config) -> dict:
    cfg.validate()
    runtime.configure(cfg.threads)
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    cats = cfg.category_list()
    times: dict[str, float] = {}
    with EpisodePool(cfg.workers) as pool:
        t = time.time()
        logs = stage_logs(cfg, pool, run_dir / "1-logs", cats)
        times["logs"] = time.time() - t
        t = time.time()
        stage_ssl(cfg, logs, run_dir / "2-ssl")
        times["ssl"] = time.time() - t
        t = time.time()
        bc = stage_bc(cfg, pool, logs, run_dir / "3-bc", cats)
        times["bc"] = time.time() - t
        t = time.time()
        rl = stage_grpo(cfg, pool, run_dir / "4-grpo", cats)
        times["grpo"] = time.time() - t
        frames = drive_report.render_frames(pool, run_dir / "4-grpo" / "final", cats, cfg.duration,
                                            run_dir / "frames") if cfg.frames else []
    summary = {"idm": stages.done(run_dir / "1-logs")["idm"], "bc": bc["eval"], "grpo": rl["eval"], "temperature": cfg.temperature,
               "experts": rl.get("experts"), "stage_seconds_this_call": times, "frames": frames}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    drive_report.write(run_dir, summary)
    print(json.dumps({k: summary[k]["all"] for k in ("idm", "bc", "grpo")}))
    return summary


# ---------------------------------------------------------------------------------------------
def stage_logs(cfg: Config, pool: EpisodePool, stage: Path, cats: tuple[str, ...]) -> dict:
    """IDM/MOBIL logs (train), its held-out drive (baseline), labelled decisions."""
    if (info := stages.done(stage)) is not None:
        return torch.load(stage / "logs.pt", weights_only=False)
    stage.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    starts, held_starts = train_starts(rng, cfg.log_episodes, cats), held_out_starts(cfg.eval_starts, cats)
    bar = tqdm(total=len(starts) + len(held_starts), desc="1-logs", unit="episode", dynamic_ncols=True)
    chunk = max(1, 4 * cfg.workers)
    episodes, _ = expert_logs(pool, starts, cfg.duration, progress=bar.update, chunk=chunk)
    n_val = max(1, len(episodes) // 10)
    held, comps = expert_logs(pool, held_starts, cfg.duration, progress=bar.update, chunk=chunk)
    bar.close()
    logs = {"train": episodes[n_val:], "val": episodes[:n_val], "held_out": held}
    torch.save(logs, stage / "logs.pt")
    labels = [s for ep in episodes for s in ep]
    info = {"episodes": len(episodes), "decisions": len(labels),
            "label_error_m": float(np.mean([s[2] for s in labels])) if labels else None,
            "idm": summarise(comps, [c["category"] for c in comps])}
    stages.finish(stage, info)
    return logs


def _new_policy(cfg: Config) -> DriverPolicy:
    torch.manual_seed(cfg.seed)
    return DriverPolicy(DriverConfig(dim=cfg.dim, hidden=cfg.hidden, layers=cfg.layers, n_routed=cfg.n_routed,
                                     experts_per_token=cfg.experts_per_token, n_shared=cfg.n_shared,
                                     dense=cfg.dense, balance_alpha=cfg.balance_alpha))


def stage_ssl(cfg: Config, logs: dict, stage: Path) -> None:
    if stages.done(stage) is not None:
        return
    stage.mkdir(parents=True, exist_ok=True)
    policy = _new_policy(cfg)
    history = []
    if cfg.ssl_steps > 0:
        bar = tqdm(total=cfg.ssl_steps, desc="2-ssl", unit="step", dynamic_ncols=True)
        history = ssl_fit(policy, [[s[0] for s in ep] for ep in logs["train"]], steps=cfg.ssl_steps,
                          lr=cfg.bc_lr, seed=cfg.seed, progress=lambda h: (bar.update(), bar.set_postfix(h)))
        bar.close()
    with open(stage / "metrics.jsonl", "w") as fh:
        for i, row in enumerate(history):
            fh.write(json.dumps({"step": i + 1, **row}) + "\n")
    with quiet_hf():
        policy.save_pretrained(stage / "final")
    stages.finish(stage, {"steps": cfg.ssl_steps, "final": history[-1] if history else None})


def evaluate(policy: DriverPolicy, pool: EpisodePool, cfg: Config, cats: tuple[str, ...]) -> tuple[dict, dict]:
    """Every held-out start state driven greedily (the deployed policy) and once sampled at the
    training temperature (the policy GRPO optimises; a fixed seed, so evaluations compare):
    metrics per category ({"sampled": ...} inside), expert statistics of the greedy drives."""
    starts = held_out_starts(cfg.eval_starts, cats)
    roll = collect(policy, pool, starts, 1, duration=cfg.duration, greedy=True)
    stats = expert_stats(roll, policy.config.n_routed) if roll.experts else {"layers": []}
    metrics = summarise(roll.components, roll.categories, roll.rewards.tolist())
    sampled = collect(policy, pool, starts, 1, duration=cfg.duration, temperature=cfg.temperature,
                      generator=torch.Generator().manual_seed(cfg.seed + 12345))
    metrics["sampled"] = summarise(sampled.components, sampled.categories, sampled.rewards.tolist())["all"]
    return metrics, stats


def stage_bc(cfg: Config, pool: EpisodePool, logs: dict, stage: Path, cats: tuple[str, ...]) -> dict:
    if (info := stages.done(stage)) is not None:
        return info
    stage.mkdir(parents=True, exist_ok=True)
    with quiet_hf():
        policy = DriverPolicy.from_pretrained(stage.parent / "2-ssl" / "final")
    samples = [s for ep in logs["train"] for s in ep]
    val = [s for ep in logs["val"] for s in ep]
    bar = tqdm(total=cfg.bc_epochs, desc="3-bc", unit="epoch", dynamic_ncols=True)
    history = bc_fit(policy, samples, val, epochs=cfg.bc_epochs, lr=cfg.bc_lr, seed=cfg.seed,
                     bias_gamma=cfg.bias_gamma, progress=lambda h: (bar.update(), bar.set_postfix(h)))
    bar.close()
    with open(stage / "metrics.jsonl", "w") as fh:
        for i, row in enumerate(history):
            fh.write(json.dumps({"epoch": i + 1, **row}) + "\n")
    with quiet_hf():
        policy.save_pretrained(stage / "final")
    metrics, experts = evaluate(policy, pool, cfg, cats)
    held = [s for ep in logs["held_out"] for s in ep]
    return stages.finish(stage, {"eval": metrics, "experts": experts, "held_out_anchor_acc": bc_accuracy(policy, held),
                           "final": history[-1] if history else None})


def stage_grpo(cfg: Config, pool: EpisodePool, stage: Path, cats: tuple[str, ...]) -> dict:
    if (info := stages.done(stage)) is not None:
        return info
    stage.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint.latest(stage) if cfg.resume else None
    with quiet_hf():
        policy = DriverPolicy.from_pretrained((ckpt / "policy") if ckpt else stage.parent / "3-bc" / "final")
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    rng = np.random.default_rng([cfg.seed, 4])
    gen = torch.Generator().manual_seed(cfg.seed)
    start = 0
    if ckpt is not None:
        state = checkpoint.load_state(ckpt)
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["np_rng"]
        gen.set_state(state["generator"])
        start = state["step"]
    log = RunLog(stage, cfg.report_to, start_step=start + 1, config=to_dict(cfg), project="r1lab-drive")
    settings = cfg.update_settings()
    bar = tqdm(total=cfg.steps, initial=start, desc="4-grpo", unit="step", dynamic_ncols=True)
    for step in range(start + 1, cfg.steps + 1):
        t0 = time.time()
        roll = collect(policy, pool, train_starts(rng, cfg.starts_per_step, cats), cfg.group_size,
                       duration=cfg.duration, temperature=cfg.temperature, generator=gen)
        t1 = time.time()
        stats = update(policy, opt, roll, cfg.group_size, settings, generator=gen)
        by = summarise(roll.components, roll.categories, roll.rewards.tolist())
        row = {"step": step, **{k: v for k, v in by["all"].items()}, **stats,
               **{f"{c}/{k}": by[c][k] for c in cats if c in by for k in ("reward", "collision", "progress")},
               "entropy": float(roll.entropy.mean()), "decisions": roll.decisions(), "rollout_s": t1 - t0, "update_s": time.time() - t1,
               "max_over_mean_load": [layer["max_over_mean"] for layer in expert_stats(roll, cfg.n_routed)["layers"]]
               if roll.experts else []}
        log.write("metrics.jsonl", row)
        bar.update()
        bar.set_postfix(reward=f"{row['reward']:.3f}", collision=f"{row['collision']:.2f}")
        if step % cfg.eval_every == 0 and step < cfg.steps:
            metrics, experts = evaluate(policy, pool, cfg, cats)
            log.write("eval.jsonl", {"step": step, "metrics": metrics, "experts": experts}, prefix=None)
        if step % cfg.save_every == 0 or step == cfg.steps:
            checkpoint.save(stage, {"policy": policy}, None, {
                "step": step, "optimizer": opt.state_dict(), "np_rng": rng.bit_generator.state,
                "generator": gen.get_state()})
    bar.close()
    log.close()
    with quiet_hf():
        policy.save_pretrained(stage / "final")
    metrics, experts = evaluate(policy, pool, cfg, cats)
    with open(stage / "eval.jsonl", "a") as fh:
        fh.write(json.dumps({"step": cfg.steps, "metrics": metrics, "experts": experts}) + "\n")
    return stages.finish(stage, {"eval": metrics, "experts": experts, "steps": cfg.steps, "settings": asdict(settings)})
