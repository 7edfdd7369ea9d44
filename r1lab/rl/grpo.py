"""GRPO and PPO as pure tensor functions: advantages, clipped policy losses, KL estimators.

Shapes use fixed letters: B prompts, G samples per prompt, N = B·G sequences, T completion
tokens, V vocabulary. ``logp[i, t]`` is the log-probability of the t-th sampled completion
token of sequence i; ``mask[i, t]`` is 1 (or True) on real completion tokens, 0 on padding.

What is here:

- ``group_advantages``: R1 eq. 3, (r − mean) / (std + eps) per group, plus Dr. GRPO
  (centring only) and "batch" scaling (group mean, batch std).
- ``policy_loss``: the clipped surrogate with k3 KL, three normalisations (R1/DeepSeekMath
  "sequence", DAPO "token", Dr. GRPO "constant"), clip-higher (``eps_high``), per-token
  (GRPO/PPO) or per-sequence (GSPO) importance ratios, advantages per sequence (N,) or per
  token (N, T) for PPO.
- ``kl_k1/k2/k3``; PPO pieces ``gae``, ``value_loss``, ``masked_mean``, ``masked_whiten``.
  Log-probs and entropy from logits are in ``r1lab/train/logprobs.py``.

Choices and differences from the papers:

- Group std is the sample std (Bessel, torch.std's default), as in TRL and verl; the papers
  do not say which. eps = 1e-4 is added to the std (TRL). A group of equal
  rewards gets advantage exactly 0. group_size 1 is rejected (it carries no signal).
- Masked positions are removed with ``torch.where`` before any arithmetic, so NaN/inf
  garbage in padding changes neither the loss nor the gradients.
- "sequence" norm counts sequences with no tokens in N (they add 0), as TRL does.
- GSPO is written in its GSPO-token form: per-token ratio sg[s_i]·π/sg[π], numerically s_i,
  so the clip acts per sequence while a per-token advantage (N, T) still works. With
  per-sequence advantages and norm="sequence" its gradient equals GSPO's. GSPO's paper uses
  tiny clip ranges (eps_low 3e-4, eps_high 4e-4): pass them, the 0.2 default is PPO's.
- The KL term is in the loss (R1 eq. 1), normalised like the surrogate; it is not clamped.

Use::

    adv = group_advantages(rewards, group_size=G)                      # (N,)
    loss, stats = policy_loss(logp, old_logp, adv, mask, ref_logp=ref, beta=1e-3)
    loss.backward()
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "gae",
    "group_advantages",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "masked_mean",
    "masked_whiten",
    "policy_loss",
    "value_loss",
]

_SCALES = ("group", "batch", "none")
_NORMS = ("sequence", "token", "constant")
_LEVELS = ("token", "sequence")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; expected one of {allowed}")


def _check_shape(name: str, x: Tensor, shape: torch.Size) -> None:
    if x.shape != shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)}")


# ---------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------


def group_advantages(rewards: Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """Group-relative advantages, one per completion (R1 eq. 3).

    ``scale="group"``: A_i = (r_i − mean_g(r)) / (std_g(r) + eps)   (R1, DeepSeekMath)
    ``scale="batch"``: A_i = (r_i − mean_g(r)) / (std_batch(r) + eps)  (group mean, batch std)
    ``scale="none"``:  A_i =  r_i − mean_g(r)                           (Dr. GRPO)

    mean_g/std_g are over the G completions of i's prompt; std_batch over all N rewards.
    Every std is the sample std (divides by count − 1, torch.std's default).

    Args:
        rewards: (N,) with N = B·G; consecutive blocks of ``group_size`` share a prompt.
        group_size: G ≥ 2.
        scale: "group", "batch" or "none".
        eps: added to the std, so an all-equal group gives exactly 0, not NaN.

    Returns:
        (N,) float advantages (float32 unless ``rewards`` is a wider float).
    """
    _choice("scale", scale, _SCALES)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B·G,), got shape {tuple(rewards.shape)}")
    if group_size < 2:
        raise ValueError(f"group_size={group_size}: GRPO needs at least 2 samples per prompt")
    n = rewards.numel()
    if n % group_size != 0:
        raise ValueError(
            f"{n} rewards are not divisible by group_size={group_size}: "
            "the batch must hold whole groups (B prompts × G samples)"
        )
    r = rewards.float() if not rewards.is_floating_point() else rewards
    grouped = r.view(-1, group_size)  # (B, G)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    if scale == "none":
        return centred
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1)
    else:
        std = r.std()
    return centred / (std + eps)


# ---------------------------------------------------------------------------------------------
# Masked statistics
# ---------------------------------------------------------------------------------------------


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """mean of x over positions where mask ≠ 0: Σ_m x / max(Σ m, 1).

    Args:
        x: any shape; values under mask = 0 are ignored even if NaN/inf.
        mask: same shape as x, bool or 0/1 float.
        dim: reduce over this dim, or over everything when None.

    Returns:
        0-d tensor (dim None) or x reduced over ``dim``. An empty mask gives 0, not NaN.
    """
    m = mask.bool()
    xs = torch.where(m, x, torch.zeros_like(x))
    if dim is None:
        return xs.sum() / m.sum().clamp(min=1)
    return xs.sum(dim) / m.sum(dim).clamp(min=1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x − μ) / sqrt(σ² + eps) over all masked entries (PPO advantage whitening).

    μ and σ² (sample variance, Bessel-corrected as in TRL) are over every position where
    mask ≠ 0. ``shift_mean=False`` adds μ back (whiten the scale only). Masked-out positions
    of the result are 0.

    Args:
        x: (N, T) (any shape works).
        mask: same shape as x.

    Returns:
        same shape as x.
    """
    m = mask.bool()
    xs = torch.where(m, x, torch.zeros_like(x))
    count = m.sum().clamp(min=2)
    mean = xs.sum() / m.sum().clamp(min=1)
    var = torch.where(m, (xs - mean) ** 2, torch.zeros_like(x)).sum() / (count - 1)
    out = (xs - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, torch.zeros_like(out))


# ---------------------------------------------------------------------------------------------
# KL estimators (Schulman, "Approximating KL divergence"); samples come from π_θ
# ---------------------------------------------------------------------------------------------


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = log π_θ − log π_ref: unbiased for KL(π_θ‖π_ref), high variance, can be < 0."""
    return logp - ref_logp


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = ½ (log π_θ − log π_ref)²: ≥ 0, biased, low variance."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = π_ref/π_θ − log(π_ref/π_θ) − 1 (R1 eq. 2): unbiased and ≥ 0.

    Written expm1(d) − d with d = ref − logp: accurate when π_θ ≈ π_ref, and never
    negative in floating point (expm1(d) ≥ d and rounding is monotone).

    Args:
        logp, ref_logp: same shape, typically (N, T) log-probs of the sampled tokens.
    """
    d = ref_logp - logp
    return torch.expm1(d) - d


# ---------------------------------------------------------------------------------------------
# Policy loss
# ---------------------------------------------------------------------------------------------


def _normalise(per_token: Tensor, m: Tensor, norm: str, max_len: int | None) -> Tensor:
    """Reduce a masked (N, T) per-token loss (zeros under the mask) to a scalar."""
    if norm == "sequence":
        return (per_token.sum(1) / m.sum(1).clamp(min=1)).mean()
    if norm == "token":
        return per_token.sum() / m.sum().clamp(min=1)
    n, t = per_token.shape
    return per_token.sum() / (n * (t if max_len is None else max_len))


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    norm: str = "sequence",
    max_len: int | None = None,
    level: str = "token",
    token_weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped surrogate loss with a k3 KL penalty (GRPO, R1 eq. 1; DAPO; Dr. GRPO; GSPO; PPO).

    Per masked token (i, t):

        ℓ_{i,t} = −w_{i,t} min(ρ_{i,t} A_{i,t}, clip(ρ_{i,t}, 1 − ε_low, 1 + ε_high) A_{i,t}) + β k3_{i,t}

    w_{i,t} = ``token_weight`` (1 when None): truncated importance sampling, min(π_old/π_sampler, C),
    when the sampler (vLLM) and the trainer disagree on the rollout policy's probabilities.

    level="token" (GRPO/PPO): ρ_{i,t} = exp(logp_{i,t} − old_logp_{i,t}).
    level="sequence" (GSPO):  s_i = exp(mean_t (logp_{i,t} − old_logp_{i,t})) over i's tokens,
        ρ_{i,t} = sg[s_i] · exp(logp_{i,t} − sg[logp_{i,t}]): equal to s_i in value (so the
        clip acts per sequence), with ∂ρ_{i,t}/∂logp_{i,t} = s_i (GSPO-token).
    A_{i,t} = advantages[i] for (N,) advantages (GRPO), advantages[i, t] for (N, T) (PPO).
    k3_{i,t} = exp(ref − logp) − (ref − logp) − 1, 0 when ``ref_logp`` is None.

    Reduction of ℓ (norm):
        "sequence": 1/N Σ_i (1/|o_i|) Σ_t ℓ_{i,t}   (R1/DeepSeekMath; |o_i| = max(tokens, 1))
        "token":    Σ_{i,t} ℓ_{i,t} / Σ_i |o_i|     (DAPO)
        "constant": Σ_{i,t} ℓ_{i,t} / (N · max_len) (Dr. GRPO; max_len defaults to T; it is
                    ignored by the other norms)

    Args:
        logp: (N, T) log π_θ of the sampled tokens; gradients flow through it.
        old_logp: (N, T) log π_old (rollout policy); treated as a constant.
        advantages: (N,) or (N, T); treated as a constant.
        mask: (N, T) bool or 0/1 float. Positions with mask 0 may hold any value, even NaN.
        ref_logp: (N, T) log π_ref or None; treated as a constant.
        beta: KL weight β; β ≠ 0 requires ``ref_logp``.
        eps_low, eps_high: clip range [1 − ε_low, 1 + ε_high]; ε_high defaults to ε_low.
        norm, max_len, level: see above.
        token_weight: (N, T) ≥ 0 or None; treated as a constant; it scales the surrogate only.

    Returns:
        (loss, stats): 0-d loss, and python floats: "loss", "pg_loss" (surrogate part),
        "kl" (masked token mean of k3), "clip_low" / "clip_high" (share of masked tokens
        where the clip is active: ρ < 1 − ε_low with A < 0 / ρ > 1 + ε_high with A > 0),
        "clip_frac" (their sum), "ratio_mean", "ratio_min", "ratio_max", "tokens".
    """
    _choice("norm", norm, _NORMS)
    _choice("level", level, _LEVELS)
    if logp.dim() != 2:
        raise ValueError(f"logp must be (N, T), got shape {tuple(logp.shape)}")
    for name, x in (("old_logp", old_logp), ("mask", mask), ("ref_logp", ref_logp), ("token_weight", token_weight)):
        if x is not None:
            _check_shape(name, x, logp.shape)
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(
            f"advantages has shape {tuple(advantages.shape)}, expected (N,) or (N, T) "
            f"with (N, T) = {tuple(logp.shape)}"
        )
    if eps_low < 0 or (eps_high is not None and eps_high < 0):
        raise ValueError(f"clip ranges must be ≥ 0, got eps_low={eps_low}, eps_high={eps_high}")
    if beta != 0.0 and ref_logp is None:
        raise ValueError(f"beta={beta} needs ref_logp (the reference policy's log-probs)")
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be ≥ 1, got {max_len}")
    eps_high = eps_low if eps_high is None else eps_high

    m = mask.bool()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    lp = torch.where(m, logp, zero)
    old = torch.where(m, old_logp.detach(), zero)
    adv = advantages.detach()
    adv = adv.unsqueeze(1).expand_as(lp) if adv.dim() == 1 else adv
    adv = torch.where(m, adv, zero)

    log_ratio = lp - old  # exactly 0 under the mask
    if level == "sequence":
        log_s = log_ratio.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
        log_ratio = log_s.detach() + lp - lp.detach()
    ratio = torch.exp(log_ratio)
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    surrogate = torch.minimum(ratio * adv, clipped * adv)
    if token_weight is not None:
        surrogate = surrogate * torch.where(m, token_weight.detach(), zero)
    pg_tok = torch.where(m, -surrogate, zero)

    if ref_logp is not None:
        kl_tok = torch.where(m, kl_k3(lp, torch.where(m, ref_logp.detach(), zero)), zero)
    else:
        kl_tok = torch.zeros_like(pg_tok)
    pg_loss = _normalise(pg_tok, m, norm, max_len)
    loss = pg_loss + beta * _normalise(kl_tok, m, norm, max_len) if beta != 0.0 else pg_loss

    with torch.no_grad():
        count = m.sum()
        denom = count.clamp(min=1)
        r = ratio.detach()
        low = (m & (r < 1.0 - eps_low) & (adv < 0)).sum() / denom
        high = (m & (r > 1.0 + eps_high) & (adv > 0)).sum() / denom
        has = count > 0
        parts = (
            loss.detach(),
            pg_loss.detach(),
            kl_tok.sum() / denom,
            low,
            high,
            low + high,
            torch.where(m, r, 0.0).sum() / denom,
            torch.where(has, torch.where(m, r, float("inf")).min(), 0.0),
            torch.where(has, torch.where(m, r, float("-inf")).max(), 0.0),
            count,
        )
        values = torch.stack([x.float() for x in parts]).tolist()  # one device sync
    keys = ("loss", "pg_loss", "kl", "clip_low", "clip_high", "clip_frac")
    keys += ("ratio_mean", "ratio_min", "ratio_max", "tokens")
    return loss, dict(zip(keys, values))


# ---------------------------------------------------------------------------------------------
# PPO baseline: GAE and the clipped value loss
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over completion tokens (Schulman et al. 2016).

        δ_t = r_t + γ V_{t+1} − V_t,   A_t = δ_t + γλ A_{t+1},   R_t = A_t + V_t

    computed backwards over t. V_{t+1} and A_{t+1} belong to the next *masked* token (masked
    positions are skipped, so padding or tool-output tokens inside a sequence are
    transparent); after the last token both are 0 (the episode ends). With γ = λ = 1,
    A_t = Σ_{k≥t} r_k − V_t.

    Args:
        rewards: (N, T) token rewards, typically the scalar reward at the last completion
            token and 0 elsewhere (plus any per-token KL shaping).
        values: (N, T) value estimates V_t.
        mask: (N, T) bool or 0/1 float; rewards/values under mask 0 are ignored.
        gamma, lam: discount γ and GAE λ.

    Returns:
        (advantages, returns): both (N, T), 0 under the mask, no gradient (targets).
    """
    _check_shape("values", values, rewards.shape)
    _check_shape("mask", mask, rewards.shape)
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    r = torch.where(m, rewards.to(values.dtype), zero)
    v = torch.where(m, values, zero)
    n, t_len = r.shape
    next_v = torch.zeros(n, dtype=v.dtype, device=v.device)
    next_a = torch.zeros_like(next_v)
    adv = torch.zeros_like(v)
    for t in reversed(range(t_len)):
        a_t = r[:, t] + gamma * next_v - v[:, t] + gamma * lam * next_a
        adv[:, t] = torch.where(m[:, t], a_t, zero)
        next_a = torch.where(m[:, t], a_t, next_a)
        next_v = torch.where(m[:, t], v[:, t], next_v)
    returns = torch.where(m, adv + v, zero)
    return adv, returns


def distill_advantages(
    teacher_logp: Tensor,
    old_logp: Tensor,
    mask: Tensor,
    discount: float = 0.0,
    seq_adv: Tensor | None = None,
    reward_weight: float = 0.0,
) -> Tensor:
    """On-policy distillation's per-token advantages (GKD with λ = 1 in the sampled-token form).

        r_t = log π_teacher(y_t) − log π_old(y_t)          (minus the per-token reverse KL)
        A_t = Σ_{k≥t} γ^{k−t} r_k  +  w · A_i               (γ = ``discount``, w = ``reward_weight``)

    γ = 0 charges each token only its own log-ratio (Thinking Machines 2025); γ = 1 charges it
    the whole rest of the sequence, the exact gradient of the sequence-level reverse KL, so a
    token that leads into text the teacher would not write pays for it. ``seq_adv`` (N,) are the
    task reward's group advantages (``group_advantages``), added to every token with weight w so
    a sample that never reaches an answer is charged for it (0 = pure distillation). The sum skips
    masked positions (``gae`` with V = 0, λ = 1).

    Args:
        teacher_logp, old_logp, mask: (N, T); mask 0/1 or bool.
        discount: γ in [0, 1].
        seq_adv: (N,) or None; needed when ``reward_weight`` ≠ 0.

    Returns:
        (N, T) advantages, 0 under the mask, no gradient.
    """
    _check_shape("old_logp", old_logp, teacher_logp.shape)
    _check_shape("mask", mask, teacher_logp.shape)
    m = mask.bool()
    r = torch.where(m, teacher_logp - old_logp, torch.zeros_like(old_logp))
    adv = r if discount == 0 else gae(r, torch.zeros_like(r), m, gamma=discount, lam=1.0)[0]
    if reward_weight:
        if seq_adv is None:
            raise ValueError("reward_weight needs seq_adv, the task reward's group advantages")
        adv = adv + torch.where(m, reward_weight * seq_adv.to(adv.dtype)[:, None], torch.zeros_like(adv))
    return adv.detach()


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float | None = 0.2
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped value loss, masked token mean over the batch.

        V_clip = V_old + clip(V − V_old, −c, c)
        L = ½ · mean_m max((V − R)², (V_clip − R)²)

    ``clip=None`` gives the unclipped ½ (V − R)².

    Args:
        values: (N, T) current V; gradients flow through it.
        old_values: (N, T) V at rollout time; constant.
        returns: (N, T) targets R (from ``gae``); constant.
        mask: (N, T) bool or 0/1 float.
        clip: c, or None.

    Returns:
        (loss, stats) with floats "value_loss", "value_clip_frac" (share of masked tokens
        where the clipped term is the larger), "value_mean", "return_mean".
    """
    for name, x in (("old_values", old_values), ("returns", returns), ("mask", mask)):
        _check_shape(name, x, values.shape)
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    v = torch.where(m, values, zero)
    v_old = torch.where(m, old_values.detach(), zero)
    ret = torch.where(m, returns.detach(), zero)
    unclipped = (v - ret) ** 2
    if clip is None:
        per_tok = unclipped
        clipped_more = torch.zeros_like(m)
    else:
        v_clip = v_old + (v - v_old).clamp(-clip, clip)
        clipped_sq = (v_clip - ret) ** 2
        per_tok = torch.maximum(unclipped, clipped_sq)
        clipped_more = clipped_sq > unclipped
    loss = 0.5 * masked_mean(per_tok, m)
    with torch.no_grad():
        values_out = torch.stack(
            [
                loss.detach(),
                masked_mean(clipped_more.to(v.dtype), m),
                masked_mean(v.detach(), m),
                masked_mean(ret, m),
            ]
        ).tolist()
    keys = ("value_loss", "value_clip_frac", "value_mean", "return_mean")
    return loss, dict(zip(keys, values_out))
