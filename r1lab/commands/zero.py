"""R1-Zero: GRPO (or PPO) from a base model with rule-based rewards.

    r1lab zero                                   # shipped base, countdown, recipes' defaults
    r1lab zero --recipe recipes/zero.toml --output-dir runs/zero-s1 --seed 1
    r1lab zero --output-dir runs/zero-s1 --resume          # after a crash or kill -9
    r1lab zero --algo ppo --output-dir runs/ppo            # the value-model baseline

One step, as in ``train_step`` below: sample B prompts × G completions with the rollout
engine -> rewards with components (a raising or hanging reward scores 0 and is counted) ->
group advantages -> μ epochs over minibatches of the clipped surrogate (+ β·k3 to a frozen
reference) -> AdamW step with gradient clipping -> log; every ``eval_every`` steps a held-out
evaluation at temperature 0.6 / top-p 0.95; a checkpoint every ``save_every`` steps.

Differences from R1: π_old is the sampling policy's own log-probs (recorded by the rollout
engine; exact, so no extra forward pass — ``--recompute-old-logp`` recomputes them); the
default loss normalisation is DAPO's token mean and clip-higher is on (ε_high 0.28); β = 0
by default (DAPO, Dr. GRPO), R1 used 0.001. ``--algo ppo`` replaces group advantages by GAE
with a learned value model (same rollouts, same loss), the baseline GRPO is compared against.
"""

from __future__ import annotations

import json
import logging
import math
import random
import resource
import time
from pathlib import Path

import torch

from r1lab import fasttrain
from r1lab.batch import micro_batches, pack, row_logprobs, trim
from r1lab.commands.zero_config import Config
from r1lab.grpo import gae, group_advantages, masked_whiten, policy_loss, value_loss
from r1lab.reflection import reflection_rate
from r1lab.rewards.safe import overlong_penalty
from r1lab.rollout import SamplingParams

HELP = "R1-Zero: GRPO (or PPO) from a base model with rule rewards"
__all__ = ["Config", "run", "HELP"]
log = logging.getLogger("r1lab.zero")


class RunLog:
    """metrics.jsonl / eval.jsonl / samples.jsonl (+ TensorBoard) of one run directory."""

    def __init__(self, run_dir: Path, tensorboard: bool, start_step: int):
        self.dir = run_dir
        for name in ("metrics.jsonl", "eval.jsonl", "samples.jsonl"):
            _truncate_from(run_dir / name, start_step)  # a resumed run redoes these steps
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # pragma: no cover
                log.warning("tensorboard not installed: metrics go to metrics.jsonl only")

    def write(self, name: str, row: dict, prefix: str = "") -> None:
        with open(self.dir / name, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        if self.tb is not None and prefix is not None:
            for key, val in row.items():
                if key != "step" and isinstance(val, (int, float)) and math.isfinite(val):
                    self.tb.add_scalar(prefix + key, val, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _truncate_from(path: Path, step: int) -> None:
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", -1) < step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
    path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")


def lr_at(step: int, cfg: Config) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    return cfg.lr


def prompt_indices(step: int, attempt: int, n_examples: int, b: int, seed: int) -> list[int]:
    """Deterministic in (seed, step): epochs over a seeded permutation; refills draw afresh."""
    if attempt > 0:
        return random.Random(f"{seed}-{step}-refill-{attempt}").sample(range(n_examples), min(b, n_examples))
    per_epoch = max(1, n_examples // b)
    epoch, k = divmod(step, per_epoch)
    perm = random.Random(f"{seed}-epoch-{epoch}").sample(range(n_examples), n_examples)
    return [perm[(k * b + j) % n_examples] for j in range(b)]


def collect(ctx, step: int) -> tuple[list, dict]:
    """Rollout + rewards for one step, with DAPO dynamic sampling when asked.

    Returns groups [(example, samples, rewards, comps)] (at most B) and rollout statistics
    computed on the first rollout (so accuracy curves are not biased by the refills)."""
    cfg, G = ctx.cfg, ctx.cfg.group_size
    groups, first, stats = [], None, {"reward_errors": 0, "reward_timeouts": 0, "kept_groups": 0}
    tries = 1 + (cfg.max_refills if cfg.dynamic_sampling else 0)
    for attempt in range(tries):
        exs = [ctx.train[i] for i in prompt_indices(step, attempt, len(ctx.train), cfg.prompts_per_step, cfg.seed)]
        params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k, ctx.stop,
                                seed=cfg.seed * 1_000_003 + step * 101 + attempt)
        out = ctx.engine.generate([ctx.task.prompt(e, ctx.tok) for e in exs], params, n=G)
        flat_ex = [e for e in exs for _ in range(G)]
        rewards, comps, errs = ctx.rewards(flat_ex, [s.text for s in out.samples])
        for key in ("reward_errors", "reward_timeouts"):
            stats[key] += errs[key]
        for i, s in enumerate(out.samples):
            pen = overlong_penalty(len(s.completion_ids), cfg.max_new_tokens, cfg.overlong_buffer)
            if pen:
                rewards[i] += pen
                comps[i]["overlong"] = pen
        if first is None:
            first = (out.samples, rewards, comps)
            ctx.last_samples = [
                {"prompt": ctx.task.prompt(exs[g], ctx.tok), "completion": out.samples[g * G].text,
                 "reward": rewards[g * G], "correct": bool(comps[g * G].get("accuracy", 0.0))}
                for g in range(min(3, len(exs)))
            ]
        for g in range(len(exs)):
            sl = slice(g * G, (g + 1) * G)
            r = rewards[sl]
            if not cfg.dynamic_sampling or max(r) - min(r) > 1e-9:
                groups.append((exs[g], out.samples[sl], r, comps[sl]))
        if len(groups) >= cfg.prompts_per_step:
            break
    groups = groups[: cfg.prompts_per_step]
    samples, rewards, comps = first
    lengths = [len(s.completion_ids) for s in samples]
    spread = [max(rewards[i : i + G]) - min(rewards[i : i + G]) > 1e-9 for i in range(0, len(rewards), G)]
    stats.update(
        reward=sum(rewards) / len(rewards),
        accuracy=sum(c.get("accuracy", 0.0) for c in comps) / len(comps),
        response_length=sum(lengths) / len(lengths),
        response_length_max=max(lengths),
        truncated_share=sum(s.finish_reason == "length" for s in samples) / len(samples),
        reflection_rate=reflection_rate([s.text for s in samples], cfg.reflection_words),
        entropy=sum(sum(s.entropies or ()) for s in samples) / max(sum(lengths), 1),
        zero_spread_share=1.0 - sum(spread) / len(spread),
        kept_groups=len(groups),
        completion_tokens=sum(lengths),
    )
    for key in sorted({k for c in comps for k in c}):
        stats[f"reward/{key}"] = sum(c.get(key, 0.0) for c in comps) / len(comps)
    return groups, stats


def micro_weight(norm: str, m: torch.Tensor, n_mb: int, tok_mb: float) -> float:
    """Scale of a micro-batch's loss so that micro-batches add up to the minibatch's loss."""
    return float(m.sum()) / max(tok_mb, 1.0) if norm == "token" else m.shape[0] / n_mb


def train_step(ctx, step: int) -> dict:
    cfg, G = ctx.cfg, ctx.cfg.group_size
    t0 = time.time()
    groups, stats = collect(ctx, step)
    t_rollout = time.time() - t0
    stats.update({"time/rollout": t_rollout, "tokens_per_s": stats.pop("completion_tokens") / max(t_rollout, 1e-9)})
    if not groups:
        stats.update(skipped_step=1.0, lr=lr_at(step, cfg), **{"time/update": 0.0, "time/step": t_rollout})
        return stats
    samples = [s for _, ss, _, _ in groups for s in ss]
    rewards = torch.tensor([r for _, _, rs, _ in groups for r in rs], dtype=torch.float32)
    pk = pack(samples, ctx.pad_id, ctx.device)
    mask = pk.mask.clone()
    if cfg.mask_truncated:
        mask[torch.tensor([s.finish_reason == "length" for s in samples], device=ctx.device)] = 0.0
    with torch.no_grad():
        # π_old: the sampling log-probs, or a fresh forward pass when asked (filled per micro-batch)
        old_logp = pk.sample_logp.clone() if cfg.recompute_old_logp else pk.sample_logp
        ref_logp = torch.zeros_like(mask) if cfg.beta > 0 else None
        old_values = torch.zeros_like(mask) if ctx.value is not None else None
        sp_old = shared_prompts(ctx, ctx.policy, pk) if cfg.recompute_old_logp else None
        sp_ref = shared_prompts(ctx, ctx.ref, pk) if ref_logp is not None else None
        for rows in micro_batches(len(samples), cfg.micro_batch, pk.lengths, cfg.micro_batch_tokens, pk.start):
            if cfg.recompute_old_logp:
                lp, _, t = row_logprobs(ctx.policy, pk, rows, cfg.temperature, shared=sp_old)
                old_logp[rows, :t] = lp
            if ref_logp is not None:
                lp, _, t = row_logprobs(ctx.ref, pk, rows, cfg.temperature, shared=sp_ref)
                ref_logp[rows, :t] = lp
            if old_values is not None:
                ids, t = trim(pk.input_ids, rows, pk.start, pk.mask)
                old_values[rows, :t] = ctx.value.completion_values(ids, pk.start)
    if ctx.value is None:
        adv = group_advantages(rewards, G, cfg.scale).to(ctx.device)
        returns = None
    else:  # PPO: the sequence reward on the last completion token, GAE over tokens
        last = (pk.mask.cumsum(1) == pk.lengths[:, None]) & (pk.mask > 0)
        token_r = torch.where(last, rewards.to(ctx.device)[:, None], torch.zeros_like(mask))
        adv, returns = gae(token_r, old_values, pk.mask, gamma=cfg.gamma, lam=cfg.gae_lambda)
        adv = masked_whiten(adv, pk.mask)
    # rows with advantage 0 everywhere (zero-spread groups) have exactly zero policy gradient
    # when nothing else is in the loss (β = 0, no value model): they still count in the loss's
    # normaliser, but need no forward/backward.
    train = torch.ones(len(samples), dtype=torch.bool, device=ctx.device)
    if cfg.skip_zero_advantage and cfg.beta == 0 and ctx.value is None and adv.dim() == 1:
        train = adv != 0
    stats["trained_share"] = float(train.float().mean())
    t1 = time.time()
    agg: dict[str, float] = {}
    n_total = len(samples)
    for epoch in range(cfg.mu):
        order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(cfg.seed + step * 7 + epoch))
        group_rows = [torch.arange(g * G, (g + 1) * G) for g in order.tolist()]
        per_mb = len(group_rows) // cfg.minibatches or 1
        for mb_i in range(0, len(group_rows), per_mb):
            mb = torch.cat(group_rows[mb_i : mb_i + per_mb])
            ok = update_minibatch(ctx, pk, mb, mask, old_logp, ref_logp, adv, returns, old_values, agg, train)
            if not ok:
                break
    for key in list(agg):
        if key.startswith("_w/"):
            continue
        agg[key] /= max(agg.get("_w/" + key, 1.0), 1e-9)
    if not bool(train.any()):  # no row ran: every A is 0 and β = 0, so these are exactly 0
        for key in ("kl", "clip_low", "clip_high", "loss"):
            agg.setdefault(key, 0.0)
    stats.update({k: v for k, v in agg.items() if not k.startswith("_w/")})
    stats.update({"time/update": time.time() - t1, "time/step": time.time() - t0, "lr": lr_at(step, cfg)})
    stats["sequences"] = float(n_total)
    stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        stats["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return stats


def shared_prompts(ctx, model, pk, rows: torch.Tensor | None = None):
    """The prompt pass of ``rows`` (all rows if None) for the shared-prefix forward, or None when
    it is off or the model is not one ``fasttrain`` covers (then the plain forward runs)."""
    if not ctx.cfg.shared_prompt or pk.prompts is None or not fasttrain.supported(model):
        return None
    use = None if rows is None else pk.prompt_index[rows].unique().tolist()
    return fasttrain.SharedPrompts(model, pk.prompts, ctx.pad_id, use)


def update_minibatch(ctx, pk, mb, mask, old_logp, ref_logp, adv, returns, old_values, agg, train=None) -> bool:
    """One optimizer step on minibatch rows ``mb``; False if the loss was not finite (skipped).

    ``train`` (N,) bool: rows that need a forward/backward (None = all); the others have zero
    gradient but still count in the loss normalisation (token count, rows)."""
    cfg = ctx.cfg
    for group in ctx.opt.param_groups:
        group["lr"] = lr_at(ctx.step, cfg)
    ctx.opt.zero_grad(set_to_none=True)
    if ctx.value_opt is not None:
        ctx.value_opt.zero_grad(set_to_none=True)
    tok_mb = float(mask[mb].sum())
    run_rows = mb if train is None else mb[train[mb]]
    shared = shared_prompts(ctx, ctx.policy, pk, run_rows) if len(run_rows) else None
    finite = True
    for rows in micro_batches(len(run_rows), cfg.micro_batch, pk.lengths[run_rows], cfg.micro_batch_tokens, pk.start):
        rows = run_rows[rows]
        logp, _, t = row_logprobs(ctx.policy, pk, rows, cfg.temperature, shared=shared)
        ids = trim(pk.input_ids, rows, pk.start, pk.mask)[0] if ctx.value is not None else None
        m = mask[rows, :t]
        loss, st = policy_loss(
            logp, old_logp[rows, :t], adv[rows] if adv.dim() == 1 else adv[rows, :t], m,
            ref_logp=None if ref_logp is None else ref_logp[rows, :t], beta=cfg.beta,
            eps_low=cfg.eps_low, eps_high=cfg.eps_high, norm=cfg.norm, max_len=cfg.max_new_tokens, level=cfg.level,
        )
        w = micro_weight(cfg.norm, m, len(mb), tok_mb)
        if ctx.value is not None:
            v = ctx.value.completion_values(ids, pk.start)
            vloss, vst = value_loss(v, old_values[rows, :t], returns[rows, :t], pk.mask[rows, :t])
            loss = loss + vloss * (float(m.sum()) / max(tok_mb, 1.0))
            st["value_loss"] = vst.get("value_loss", float(vloss.detach()))
        if not torch.isfinite(loss):
            finite = False
            break
        (loss * w).backward()
        tokens = float(m.sum())
        for key in ("kl", "clip_low", "clip_high", "ratio_mean", "value_loss", "loss"):
            if key in st:
                agg[key] = agg.get(key, 0.0) + st[key] * tokens
                agg["_w/" + key] = agg.get("_w/" + key, 0.0) + tokens
    params = [p for g in ctx.opt.param_groups for p in g["params"]]
    if finite and shared is not None:
        shared.backward()  # the prompts' part of the gradient, summed over the micro-batches
    if finite and not len(run_rows):  # nothing to run: the gradient is exactly zero (AdamW still steps)
        for p in params:
            p.grad = torch.zeros_like(p)
    gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if finite else torch.tensor(float("nan"))
    if ctx.value_opt is not None and finite:
        torch.nn.utils.clip_grad_norm_(ctx.value.parameters(), cfg.grad_clip)
    if not finite or not torch.isfinite(gnorm):
        ctx.opt.zero_grad(set_to_none=True)
        ctx.bad_steps += 1
        agg["nonfinite_skips"] = agg.get("nonfinite_skips", 0.0) + 1
        agg["_w/nonfinite_skips"] = 1.0
        log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", ctx.step, ctx.bad_steps)
        if ctx.bad_steps >= cfg.max_bad_steps:
            raise FloatingPointError(
                f"{ctx.bad_steps} non-finite updates in a row at step {ctx.step}; stopping "
                f"(lower --lr or raise --max-bad-steps). Last good checkpoint: {ctx.run_dir / 'checkpoint'}"
            )
        return False
    ctx.bad_steps = 0
    ctx.opt.step()
    if ctx.value_opt is not None:
        ctx.value_opt.step()
    agg["grad_norm"] = agg.get("grad_norm", 0.0) + float(gnorm)
    agg["_w/grad_norm"] = agg.get("_w/grad_norm", 0.0) + 1.0
    return True


from r1lab.commands.zero_run import run  # noqa: E402  (setup, evaluation and the outer loop)
