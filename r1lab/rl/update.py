"""The learning half of an RL step: rollouts -> a ``RolloutBatch`` -> optimizer steps.

    batch = prepare(groups, learner, settings)        # pack, π_old, π_ref, V_old, advantages
    agg = update(batch, learner, settings, lr, step)  # μ epochs × minibatches of the surrogate

Shapes: N = B·G sequences of the step, T completion columns (``train/batch.py``'s packed layout).

- Advantages: GRPO's group-normalised A_i (R1 eq. 3; ``scale`` picks Dr. GRPO / batch scaling),
  one per sequence (N,), or, when the learner has a critic (PPO), GAE over tokens (N, T) from
  the sequence reward placed on the last completion token, whitened over the batch, or, when it
  has a teacher (on-policy distillation, GKD with λ = 1 in the sampled-token form of Thinking
  Machines 2025), A_{i,t} = log π_teacher(y_{i,t}) − log π_old(y_{i,t}): the per-token reverse KL
  with its sign flipped, so the surrogate's gradient is that of −KL(π_θ ‖ π_teacher) on the
  student's own samples; ``distill_discount`` γ > 0 charges each token the discounted reverse KL
  of the rest of its sequence, and ``distill_reward`` w > 0 adds w · the task reward's group
  advantage (``grpo.distill_advantages``); with w = 0 rewards are only logged.
- π_old is the sampling log-probs the engine recorded (exact for μ = 1, no extra forward), or a
  fresh no-grad pass with ``recompute_old_logp`` (and with ``--engine vllm`` unless its correction is
  "none"); then, with ``sampler_correction`` "tis", every token's surrogate is weighted by the
  truncated importance ratio w = min(exp(log π_old − log π_vllm), C) (Yao et al. 2025, as in verl),
  which corrects for sampling from vLLM's numerics while training on the trainer's; π_ref a no-grad pass of the frozen reference
  when β > 0. Both run per micro-batch.
- Each minibatch is one optimizer step over whole groups: every micro-batch's loss is scaled so
  that they add up to the minibatch's loss under the chosen normalisation (``micro_weight``),
  then gradients are clipped to ``grad_clip``. A non-finite loss or gradient skips the step
  (counted); ``max_bad_steps`` in a row raise ``NonFiniteError``.
- Rows whose advantage is 0 (zero-spread groups) have exactly zero policy gradient when β = 0
  and there is no critic: they still count in the loss's normaliser but run no forward/backward.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from r1lab import distributed
from r1lab.rl.collect import Group
from r1lab.rl.grpo import (
    distill_advantages,
    gae,
    group_advantages,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)
from r1lab.rl.learner import Learner
from r1lab.rl.settings import RLSettings
from r1lab.train import fasttrain
from r1lab.train.batch import Packed, micro_batches, pack, row_logprobs, trim

log = logging.getLogger("r1lab.rl")


class NonFiniteError(FloatingPointError):
    """Too many non-finite losses or gradients in a row: the run should stop (nothing is lost)."""


@dataclass
class RolloutBatch:
    """One step's rollouts as tensors: everything the minibatch updates read (N rows, T columns)."""

    pk: Packed
    mask: torch.Tensor  # (N, T) loss mask: completion tokens, minus truncated rows if masked
    old_logp: torch.Tensor  # (N, T) π_old of each sampled token
    ref_logp: torch.Tensor | None  # (N, T) π_ref when β > 0
    adv: torch.Tensor  # (N,) per sequence (GRPO) or (N, T) per token (PPO)
    returns: torch.Tensor | None = None  # (N, T) PPO value targets
    old_values: torch.Tensor | None = None  # (N, T) PPO V_old
    train: torch.Tensor | None = None  # (N,) bool: rows that need a forward/backward (None = all)
    owned: torch.Tensor | None = None  # (N,) bool: rows this rank trains under torchrun (None = all)
    is_weight: torch.Tensor | None = None  # (N, T) truncated importance weights min(π_old/π_sampler, C)
    n_groups: int = 0
    stats: dict[str, float] = field(default_factory=dict)  # batch-level statistics to log


def shared_prompts(model, pk: Packed, settings: RLSettings, pad_id: int, rows: torch.Tensor | None = None):
    """The prompt pass of ``rows`` (all rows if None) for the shared-prefix forward, or None when
    it is off or the model is not one ``fasttrain`` covers (then the plain forward runs)."""
    if not settings.shared_prompt or pk.prompts is None or distributed.sharded(model) or not fasttrain.supported(model):
        return None
    if rows is not None and not len(rows):
        return None
    use = None if rows is None else pk.prompt_index[rows].unique().tolist()
    return fasttrain.SharedPrompts(model, pk.prompts, pad_id, use)


@torch.no_grad()
def prepare(groups: list[Group], learner: Learner, s: RLSettings) -> RolloutBatch:
    """Pack the groups' samples and compute π_old, π_ref, V_old and the advantages."""
    samples = [x for g in groups for x in g.samples]
    rewards = torch.tensor([r for g in groups for r in g.rewards], dtype=torch.float32)
    device = learner.device
    pk = pack(samples, learner.pad_id, device)
    # under torchrun: group g is this rank's when g mod W == rank; per-row passes run on own rows,
    # then sum_tensor completes them (every other row is 0 there), so all ranks hold every row
    owned = distributed.owned(len(groups)).repeat_interleave(s.group_size).to(device)
    mine = torch.nonzero(owned).squeeze(1)
    mask = pk.mask.clone()
    if s.mask_truncated:
        mask[torch.tensor([x.finish_reason == "length" for x in samples], device=device)] = 0.0
    recompute = s.recomputes_old()
    old_logp = torch.zeros_like(mask) if recompute else pk.sample_logp
    ref_logp = torch.zeros_like(mask) if s.beta > 0 else None
    critic = learner.critic
    old_values = torch.zeros_like(mask) if critic is not None else None
    teacher_logp = torch.zeros_like(mask) if learner.teacher is not None else None
    sp_teacher = shared_prompts(learner.teacher, pk, s, learner.pad_id, mine) if teacher_logp is not None else None
    sp_old = shared_prompts(learner.sampler, pk, s, learner.pad_id, mine) if recompute else None
    sp_ref = shared_prompts(learner.ref, pk, s, learner.pad_id, mine) if ref_logp is not None else None
    for rows in micro_batches(len(mine), s.micro_batch, pk.lengths[mine], s.micro_batch_tokens, pk.start):
        rows = mine[rows]
        if recompute:
            lp, _, t = row_logprobs(learner.sampler, pk, rows, s.temperature, shared=sp_old)  # weights as sampled
            old_logp[rows, :t] = lp
        if ref_logp is not None:
            lp, _, t = row_logprobs(learner.ref, pk, rows, s.temperature, shared=sp_ref)
            ref_logp[rows, :t] = lp
        if old_values is not None:
            ids, t = trim(pk.input_ids, rows, pk.start, pk.mask)
            old_values[rows, :t] = critic.model.completion_values(ids, pk.start)
        if teacher_logp is not None:
            lp, _, t = row_logprobs(learner.teacher, pk, rows, s.temperature, shared=sp_teacher)
            teacher_logp[rows, :t] = lp
    for t in (old_logp if recompute else None, ref_logp, old_values, teacher_logp):
        if t is not None:
            distributed.sum_tensor(t)
    returns = None
    if teacher_logp is not None:  # on-policy distillation: −(reverse KL), own token or discounted future
        seq_adv = group_advantages(rewards, s.group_size, s.scale).to(device) if s.distill_reward else None
        adv = distill_advantages(teacher_logp, old_logp, pk.mask, s.distill_discount, seq_adv, s.distill_reward)
    elif critic is None:
        adv = group_advantages(rewards, s.group_size, s.scale).to(device)
    else:  # PPO: the sequence reward on the last completion token, GAE over tokens
        last = (pk.mask.cumsum(1) == pk.lengths[:, None]) & (pk.mask > 0)
        token_r = torch.where(last, rewards.to(device)[:, None], torch.zeros_like(mask))
        adv, returns = gae(token_r, old_values, pk.mask, gamma=s.gamma, lam=s.gae_lambda)
        adv = masked_whiten(adv, pk.mask)
    if teacher_logp is not None:
        m = pk.mask
        rkl = float(((old_logp - teacher_logp) * m).sum() / m.sum().clamp(min=1))
    train = torch.ones(len(samples), dtype=torch.bool, device=device)
    if s.skip_zero_advantage and s.beta == 0 and critic is None and adv.dim() == 1:
        train = adv != 0
    batch = RolloutBatch(pk, mask, old_logp, ref_logp, adv, returns=returns, old_values=old_values, train=train,
                         owned=owned, n_groups=len(groups))
    if recompute:  # how far the sampler's log-probs are from the trainer's on the same tokens
        gap = (old_logp - pk.sample_logp).abs() * pk.mask
        batch.stats["sampler_logp_gap"] = float(masked_mean(gap, pk.mask))
        batch.stats["sampler_logp_gap_max"] = float(gap.max()) if gap.numel() else 0.0
    if s.uses_tis():  # truncated importance sampling: w = min(π_old / π_sampler, C) per token
        w = torch.exp(old_logp - pk.sample_logp).clamp(max=s.tis_cap) * pk.mask
        batch.is_weight = w
        batch.stats["tis_mean"] = float(masked_mean(w, pk.mask))
        batch.stats["tis_capped_share"] = float(masked_mean((w >= s.tis_cap).float(), pk.mask))
    if teacher_logp is not None:
        batch.stats["reverse_kl"] = rkl
    return batch


def update(batch: RolloutBatch, learner: Learner, s: RLSettings, lr: float, step: int) -> dict[str, float]:
    """μ epochs over the batch, each split into ``minibatches`` optimizer steps over whole groups
    (a seeded shuffle of the groups per epoch). Returns token-weighted means of the loss
    statistics (``kl``, ``clip_low``, ``clip_high``, ``ratio_mean``, ``loss``, ``value_loss``),
    the mean ``grad_norm`` and ``nonfinite_skips``."""
    G = s.group_size
    agg: dict[str, float] = {}
    for epoch in range(s.mu):
        order = torch.randperm(batch.n_groups, generator=torch.Generator().manual_seed(s.seed + step * 7 + epoch))
        group_rows = [torch.arange(g * G, (g + 1) * G) for g in order.tolist()]
        per_mb = len(group_rows) // s.minibatches or 1
        for mb_i in range(0, len(group_rows), per_mb):
            mb = torch.cat(group_rows[mb_i : mb_i + per_mb])
            if not update_minibatch(batch, mb, learner, s, lr, agg, step):
                break
    agg = merge_ranks(agg)
    out = {k: v / max(agg.get("_w/" + k, 1.0), 1e-9) for k, v in agg.items() if not k.startswith("_w/")}
    if batch.train is not None and not bool(batch.train.any()):  # no row ran: A = 0 and β = 0, so exactly 0
        for key in ("kl", "clip_low", "clip_high", "loss"):
            out.setdefault(key, 0.0)
    return out


def merge_ranks(agg: dict[str, float]) -> dict[str, float]:
    """Under torchrun: the loss statistics' weighted sums added over ranks; ``grad_norm`` and
    ``nonfinite_skips`` are of the summed gradient, the same on every rank, so rank 0's."""
    parts = distributed.gather(agg)
    if len(parts) == 1:
        return agg
    same = ("grad_norm", "_w/grad_norm", "nonfinite_skips", "_w/nonfinite_skips")
    out = {k: v for k, v in parts[0].items() if k in same}
    for part in parts:
        for k, v in part.items():
            if k not in same:
                out[k] = out.get(k, 0.0) + v
    return out


def zero_pass(model, pad_id: int, device) -> None:
    """A forward and backward whose loss is 0: a sharded rank with no rows left joins its peers'
    all-gathers and reduce-scatters, and adds nothing to the gradient."""
    logits = model(input_ids=torch.full((1, 2), pad_id, dtype=torch.long, device=device)).logits
    (logits.float().sum() * 0.0).backward()


def micro_weight(norm: str, m: torch.Tensor, n_mb: int, tok_mb: float) -> float:
    """Scale of a micro-batch's loss so that micro-batches add up to the minibatch's loss."""
    return float(m.sum()) / max(tok_mb, 1.0) if norm == "token" else m.shape[0] / n_mb


def _add(agg: dict[str, float], key: str, value: float, weight: float) -> None:
    agg[key] = agg.get(key, 0.0) + value * weight
    agg["_w/" + key] = agg.get("_w/" + key, 0.0) + weight


def update_minibatch(batch: RolloutBatch, mb: torch.Tensor, learner: Learner, s: RLSettings, lr: float,
                     agg: dict[str, float], step: int = 0) -> bool:
    """One optimizer step on minibatch rows ``mb``; False if the loss was not finite (skipped).

    Accumulates weighted statistics into ``agg`` (``key`` and its weight ``_w/key``)."""
    opt, critic, pk = learner.optimizer, learner.critic, batch.pk
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    if critic is not None:
        critic.optimizer.zero_grad(set_to_none=True)
    tok_mb = float(batch.mask[mb].sum())
    run_rows = mb if batch.train is None else mb[batch.train[mb]]
    if batch.owned is not None:  # under torchrun: this rank's rows of the minibatch
        run_rows = run_rows[batch.owned[run_rows]]
    shared = shared_prompts(learner.policy, pk, s, learner.pad_id, run_rows) if len(run_rows) else None
    fsdp = distributed.sharded(learner.policy)
    chunks = list(micro_batches(len(run_rows), s.micro_batch, pk.lengths[run_rows], s.micro_batch_tokens, pk.start))
    # FSDP: every forward/backward is a collective, so every rank runs as many (agreed before the
    # first), padding with zero-loss passes, and keeps going past a non-finite loss (its gradient
    # is thrown away: every rank skips the step below)
    extra = distributed.max_count(len(chunks)) - len(chunks) if fsdp else 0
    finite = True
    for rows in chunks:
        rows = run_rows[rows]
        logp, _, t = row_logprobs(learner.policy, pk, rows, s.temperature, shared=shared)
        m = batch.mask[rows, :t]
        adv = batch.adv[rows] if batch.adv.dim() == 1 else batch.adv[rows, :t]
        ref = None if batch.ref_logp is None else batch.ref_logp[rows, :t]
        w_is = None if batch.is_weight is None else batch.is_weight[rows, :t]
        loss, st = policy_loss(logp, batch.old_logp[rows, :t], adv, m, ref_logp=ref, beta=s.beta, eps_low=s.eps_low,
                               eps_high=s.eps_high, norm=s.norm, max_len=s.max_new_tokens, level=s.level,
                               token_weight=w_is)
        w = micro_weight(s.norm, m, len(mb), tok_mb)
        if critic is not None:
            ids = trim(pk.input_ids, rows, pk.start, pk.mask)[0]
            v = critic.model.completion_values(ids, pk.start)
            vloss, vst = value_loss(v, batch.old_values[rows, :t], batch.returns[rows, :t], pk.mask[rows, :t])
            loss = loss + vloss * (float(m.sum()) / max(tok_mb, 1.0))
            st["value_loss"] = vst.get("value_loss", float(vloss.detach()))
        if not torch.isfinite(loss):
            finite = False
            if not fsdp:
                break
        (loss * w).backward()
        for key in ("kl", "clip_low", "clip_high", "ratio_mean", "value_loss", "loss"):
            if key in st and finite:
                _add(agg, key, st[key], float(m.sum()))
    for _ in range(extra):
        zero_pass(learner.policy, learner.pad_id, pk.input_ids.device)
    params = [p for g in opt.param_groups for p in g["params"]]
    if finite and shared is not None:
        shared.backward()  # the prompts' part of the gradient, summed over the micro-batches
    if finite and not len(run_rows):  # nothing to run: the gradient is exactly zero (AdamW still steps)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
    finite = distributed.all_true(finite)  # every rank skips, or none does
    if finite and not fsdp:  # torchrun: the ranks' gradients add up to the single-process one (FSDP:
        distributed.sum_gradients(params)  # its reduce-scatter already summed them into each shard)
        if critic is not None:
            distributed.sum_gradients(list(critic.model.parameters()))
    gnorm = torch.nn.utils.clip_grad_norm_(params, s.grad_clip) if finite else torch.tensor(float("nan"))
    gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm  # a DTensor under FSDP
    if critic is not None and finite:
        torch.nn.utils.clip_grad_norm_(critic.model.parameters(), s.grad_clip)
    if not finite or not torch.isfinite(gnorm):
        opt.zero_grad(set_to_none=True)
        learner.bad_steps += 1
        agg["nonfinite_skips"] = agg.get("nonfinite_skips", 0.0) + 1
        agg["_w/nonfinite_skips"] = 1.0
        log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", step, learner.bad_steps)
        if learner.bad_steps >= s.max_bad_steps:
            raise NonFiniteError(f"{learner.bad_steps} non-finite updates in a row at step {step}; stopping "
                                 "(lower --lr or raise --max-bad-steps)")
        return False
    learner.bad_steps = 0
    opt.step()
    if critic is not None:
        critic.optimizer.step()
    _add(agg, "grad_norm", float(gnorm), 1.0)
    return True
