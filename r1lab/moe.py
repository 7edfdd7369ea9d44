"""DeepSeek-V3 mixture-of-experts: sigmoid routing with a selection-only bias, the bias update, a balance loss.

What it does (DeepSeek-V3 report, §2.1.2, eq. 12-19), with N tokens, E routed experts, K = top_k, D = dim,
H = hidden (one expert's width):

    s      = sigmoid(x·W_r)                      (N, E) affinities
    chosen = TopK(s + b, K)                      (N, K) the bias b only selects ...
    g      = scale · s[chosen] / Σ s[chosen]     (N, K) ... the gates come from s alone
    y      = shared(x) + Σ_k g_k · expert_{chosen_k}(x),   expert(x) = down(silu(gate(x)) · up(x))

``route`` is the router (with group-limited selection, as V3's ``n_group``/``topk_group``),
``update_bias`` the auxiliary-loss-free balancing step b_i += γ·sign(mean load − load_i), and ``MoE``
the layer: shared experts always on, routed experts stored stacked as (E, ...) parameters, two
vectorised dispatch paths ("sort": token slots sorted by expert, each expert on its contiguous
slice, by torch's grouped GEMM where it applies, else one matmul pair per expert; "dense": every
expert on every token with a gate matrix that is zero off the chosen experts, two big GEMMs,
fastest for tiny E and few tokens), an optional sequence-wise balance loss, and a fixed-routing
forward (``experts=``) for the inner epochs of a PPO/GRPO update.

How it differs from the paper and from transformers' ``DeepseekV3MoE``:
- no node-limited routing (that is a device placement constraint; ``n_group`` gives the same
  selection rule on one device), no expert parallelism, no capacity / token dropping;
- any sizes: the paper's experts are 2048 wide with 1 shared + 256 routed, K = 8, scale 2.5;
- the bias update and the balance loss live here (transformers keeps ``e_score_correction_bias``
  as a buffer it never updates and has no balance loss): call ``update_bias(gamma)`` after each
  optimizer step (γ = 1e-3 in the paper) and add ``last_aux_loss`` (α = 1e-4) to the loss. Under
  data parallelism, all-reduce ``load_accum`` (a sum) across ranks before ``update_bias``;
- the router runs in at least fp32 (as transformers does), the experts in the input's dtype.

Weights map to transformers' one-to-one: ``router.weight`` = ``gate.weight``, ``bias`` =
``gate.e_score_correction_bias``, ``w_gate_up`` = ``experts.gate_up_proj.transpose(1, 2)``,
``w_down`` = ``experts.down_proj.transpose(1, 2)``, ``shared.*`` = ``shared_experts.*``.

Tests: ``OMP_NUM_THREADS=1 pytest -q tests/test_moe.py``; speed: ``python bench/moe.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DISPATCH = ("auto", "sort", "dense")
# "auto" (``MoE.dense_for``): sort with torch's grouped GEMM wherever it applies; otherwise dense (every
# expert on every token) for E <= DENSE_MAX_EXPERTS on CUDA, and on CPU where also N·E <= DENSE_MAX_CPU_WORK.
# Measured on CPU (fp32, D 64, H 128, K 2, 1 thread): grouped sort beats dense everywhere from N 16 to
# 4096, E 4 to 32 (1.1-5x; dense does E/K times the routed FLOPs); against the per-expert loop dense wins
# by 10-25% at N 64 and loses 1.7-3x at N 256-4096 with E 8. On CUDA unmeasured: dense assumed to beat
# the loop for small E (fewer kernel launches, no host sync for the per-expert counts).
DENSE_MAX_EXPERTS = 8
DENSE_MAX_CPU_WORK = 1024


def gate_weights(scores: Tensor, experts: Tensor, *, normalize: bool = True, scale: float = 1.0) -> Tensor:
    """Gates of chosen experts: g = scale · s[experts] / (Σ_k s[experts] + 1e-20) (no division unless normalize).

    scores s (N, E) sigmoid affinities; experts (N, K) indices; returns (N, K) in s's dtype.
    """
    w = scores.gather(1, experts)
    if normalize:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    return w * scale


def route(logits: Tensor, bias: Tensor, top_k: int, *, n_group: int = 1, topk_group: int = 1,
          normalize: bool = True, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """DeepSeek-V3's router: choose on s + b, weigh by s.

    logits (N, E) = x·W_r; bias b (E,); s = sigmoid(logits) (N, E).
    Group-limited selection (n_group G > 1): the E experts form G contiguous groups of E/G; a group
    scores the sum of its two best (s + b); the topk_group best groups stay, the other experts are
    masked out. Then experts = TopK(s + b, K) over the kept experts, (N, K) int64, best first, and
    weights = gate_weights(s, experts): scale · s[experts] / Σ_k s[experts] when normalize, (N, K).
    The bias changes which experts are chosen, never the weights.
    """
    n, e = logits.shape
    if e % n_group or not 1 <= topk_group <= n_group:
        raise ValueError(f"need n_group ({n_group}) dividing E ({e}) and 1 <= topk_group ({topk_group}) <= n_group")
    if not 1 <= top_k <= topk_group * (e // n_group):
        raise ValueError(f"top_k {top_k} is not in 1..{topk_group * (e // n_group)} (topk_group × experts per group)")
    scores = logits.sigmoid()
    choice = scores.detach() + bias.to(scores.dtype)
    if n_group > 1:
        per = e // n_group
        groups = choice.view(n, n_group, per).topk(min(2, per), dim=-1).values.sum(dim=-1)  # (N, G)
        keep = groups.topk(topk_group, dim=-1).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, keep, True)
        choice = choice.masked_fill(~mask.repeat_interleave(per, dim=1), float("-inf"))
    experts = choice.topk(top_k, dim=-1).indices
    return gate_weights(scores, experts, normalize=normalize, scale=scale), experts


def update_bias(bias: Tensor, load: Tensor, gamma: float) -> Tensor:
    """Auxiliary-loss-free balancing (V3 §2.1.2): b_i + γ · sign(mean_j load_j − load_i), a new float tensor.

    bias (E,); load (E,) tokens routed to each expert (over a step); underloaded experts go up,
    overloaded ones down, experts at the mean stay.
    """
    dtype = bias.dtype if bias.is_floating_point() else torch.get_default_dtype()
    load = load.to(dtype)
    return bias.to(dtype) + gamma * torch.sign(load.mean() - load)


def balance_loss(scores: Tensor, experts: Tensor, seq_len: int, alpha: float) -> Tensor:
    """Sequence-wise balance loss (V3 eq. 17-19), averaged over the N/T sequences of T = seq_len tokens.

    scores s (N, E); experts (N, K). Per sequence: s' = s / Σ_j s_j (per token),
    P_i = (1/T) Σ_t s'_{t,i}, f_i = E / (K·T) · #{t : i ∈ experts_t}, L = α Σ_i f_i P_i. Scalar;
    gradient only through P (f counts are constants).
    """
    n, e = scores.shape
    k = experts.shape[1]
    if n % seq_len:
        raise ValueError(f"{n} tokens do not split into sequences of {seq_len}")
    b = n // seq_len
    p = (scores / scores.sum(dim=-1, keepdim=True)).view(b, seq_len, e).mean(dim=1)  # (B, E)
    counts = scores.new_zeros(b, e).scatter_add_(1, experts.reshape(b, seq_len * k),
                                                  scores.new_ones(b, seq_len * k))
    f = counts * (e / (k * seq_len))
    return alpha * (f * p).sum(dim=-1).mean()


class SwiGLU(nn.Module):
    """down(silu(gate(x)) · up(x)), (..., D) -> (..., D) through width H; names as transformers' DeepseekV3MLP."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    """DeepSeek-V3 MoE layer: n_shared shared SwiGLU experts (one SwiGLU n_shared·H wide) + E routed ones.

    Parameters: ``router`` Linear(D, E) (logits), ``w_gate_up`` (E, D, 2H) (gate half first, then up),
    ``w_down`` (E, H, D), ``shared`` (None when n_shared = 0). Buffers: ``bias`` (E,) the selection
    bias (never trained by the optimizer, moved by ``update_bias``; stays fp32 under bf16 casts),
    ``load_accum`` (E,) int64 tokens per expert summed over training-mode forwards since the last
    ``update_bias`` (forwards with fixed ``experts`` count too).
    After each forward: ``last_load`` (E,) float token counts, ``last_experts`` (N, K), ``last_aux_loss``
    (scalar; the balance loss with grad, 0 when balance_alpha = 0).
    dispatch: "sort" | "dense" | "auto" (``dense_for``: sort with grouped GEMM where it applies, else dense
    for small E and few tokens); both give the same values and gradients.
    """

    def __init__(self, dim: int, hidden: int, n_routed: int, top_k: int, n_shared: int = 1, *, n_group: int = 1,
                 topk_group: int = 1, scale: float = 1.0, normalize: bool = True, balance_alpha: float = 0.0,
                 dispatch: str = "auto"):
        super().__init__()
        if dispatch not in DISPATCH:
            raise ValueError(f"dispatch {dispatch!r} is not one of {DISPATCH}")
        if n_routed % n_group or not 1 <= topk_group <= n_group or not 1 <= top_k <= topk_group * (n_routed // n_group):
            raise ValueError(f"bad routing: E {n_routed}, top_k {top_k}, n_group {n_group}, topk_group {topk_group}")
        self.dim, self.hidden, self.n_routed, self.top_k = dim, hidden, n_routed, top_k
        self.n_group, self.topk_group, self.scale, self.normalize = n_group, topk_group, scale, normalize
        self.balance_alpha = balance_alpha
        self.dispatch = dispatch
        self.use_grouped_mm = True  # sort path: torch's grouped GEMM where ``grouped_ok`` (else a loop)
        self.router = nn.Linear(dim, n_routed, bias=False)
        self.w_gate_up = nn.Parameter(torch.empty(n_routed, dim, 2 * hidden).uniform_(-dim**-0.5, dim**-0.5))
        self.w_down = nn.Parameter(torch.empty(n_routed, hidden, dim).uniform_(-hidden**-0.5, hidden**-0.5))
        self.shared = SwiGLU(dim, n_shared * hidden) if n_shared else None
        self.register_buffer("bias", torch.zeros(n_routed))
        self.register_buffer("load_accum", torch.zeros(n_routed, dtype=torch.long), persistent=False)
        self.last_load = torch.zeros(n_routed)
        self.last_experts: Tensor | None = None
        self.last_aux_loss = torch.zeros(())

    def _apply(self, fn, recurse=True):
        """As nn.Module's, but a cast to bf16/fp16 keeps ``bias`` fp32 (as transformers keeps
        e_score_correction_bias): γ = 1e-3 steps would vanish in bf16's 8-bit mantissa."""
        bias = self.bias
        super()._apply(fn, recurse)
        if self.bias.is_floating_point() and self.bias.element_size() < 4:
            self.bias = bias.to(device=self.bias.device, dtype=torch.float32)
        return self

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, hidden={self.hidden}, n_routed={self.n_routed}, top_k={self.top_k}, "
                f"n_group={self.n_group}, topk_group={self.topk_group}, scale={self.scale}, dispatch={self.dispatch}")

    def forward(self, x: Tensor, experts: Tensor | None = None, seq_len: int | None = None) -> Tensor:
        """y = shared(x) + Σ_k g_k expert_{e_k}(x); x (..., D) -> (..., D), flattened to N tokens inside.

        experts (N, K): reuse this selection (e.g. ``last_experts`` of the rollout) instead of routing;
        the gates still come from the current affinities at those indices (normalised, scaled).
        seq_len T: tokens per sequence for the balance loss (default: x's dim 1 when x is (B, T, D),
        else all N tokens form one sequence).
        """
        shape = x.shape
        h = x.reshape(-1, self.dim)
        rdtype = torch.promote_types(h.dtype, torch.float32)
        logits = F.linear(h.to(rdtype), self.router.weight.to(rdtype))
        if experts is None:
            w, experts = route(logits, self.bias, self.top_k, n_group=self.n_group, topk_group=self.topk_group,
                               normalize=self.normalize, scale=self.scale)
        else:
            if experts.shape != (h.shape[0], self.top_k):
                raise ValueError(f"experts has shape {tuple(experts.shape)}, expected ({h.shape[0]}, {self.top_k})")
            experts = experts.to(device=h.device, dtype=torch.long)
            w = gate_weights(logits.sigmoid(), experts, normalize=self.normalize, scale=self.scale)
        w = w.to(h.dtype)
        y = self._dense(h, w, experts) if self.dense_for(h) else self._sort(h, w, experts)
        if self.shared is not None:
            y = y + self.shared(h)
        self._record(logits, experts, seq_len or (shape[1] if x.dim() == 3 else h.shape[0]))
        return y.reshape(shape)

    def dense_for(self, h: Tensor) -> bool:
        """Whether a forward of h (N, D) takes the dense path (see DENSE_MAX_EXPERTS for "auto")."""
        if self.dispatch != "auto":
            return self.dispatch == "dense"
        if self.n_routed > DENSE_MAX_EXPERTS or self.grouped_ok(h):
            return False
        return h.device.type == "cuda" or h.shape[0] * self.n_routed <= DENSE_MAX_CPU_WORK

    def _record(self, logits: Tensor, experts: Tensor, seq_len: int) -> None:
        """Statistics of the last forward; the balance loss; the load summed for ``update_bias``."""
        load = self._counts(experts)
        self.last_load = load.float()
        self.last_experts = experts.detach()
        if self.training:
            self.load_accum += load
        if self.balance_alpha > 0:
            self.last_aux_loss = balance_loss(logits.sigmoid(), experts, seq_len, self.balance_alpha)
        else:
            self.last_aux_loss = logits.new_zeros(())

    def _sort(self, h: Tensor, w: Tensor, experts: Tensor) -> Tensor:
        """Token slots sorted by expert; each expert runs on its contiguous slice (one grouped GEMM where
        ``grouped_ok``, else a loop over experts); slots go back in order and sum over K."""
        n, k = experts.shape
        if n == 0:
            return h.new_zeros(h.shape)
        flat = experts.reshape(-1)
        order = torch.argsort(flat, stable=True)  # (N·K,) slots grouped by expert
        counts = self._counts(experts)
        xs = h[order // k]  # (N·K, D)
        if self.grouped_ok(h):
            offs = counts.cumsum(0).to(torch.int32)
            gate, up = F.grouped_mm(xs, self.w_gate_up, offs=offs).chunk(2, dim=-1)
            ys = F.grouped_mm(F.silu(gate) * up, self.w_down, offs=offs)
        else:
            outs = []
            for e, part in enumerate(xs.split(counts.tolist())):
                if part.shape[0]:
                    gate, up = (part @ self.w_gate_up[e]).chunk(2, dim=-1)
                    outs.append((F.silu(gate) * up) @ self.w_down[e])
            ys = torch.cat(outs)
        ys = ys * w.reshape(-1)[order].unsqueeze(-1)
        # back to slot order, then a sum over K (deterministic, unlike index_add's atomics on CUDA)
        return ys.new_empty(ys.shape).index_copy(0, order, ys).view(n, k, -1).sum(dim=1)

    def grouped_ok(self, h: Tensor) -> bool:
        """Whether the sort path of input h (N, D) uses torch's grouped GEMM (F.grouped_mm, torch >= 2.10):
        fp32/bf16 on CPU, bf16 on CUDA SM >= 8.0 (not tested here), D and H rows 16-byte multiples,
        16-byte aligned weights. ``use_grouped_mm = False`` forces the per-expert loop."""
        if not (self.use_grouped_mm and hasattr(F, "grouped_mm")):
            return False
        if h.device.type == "cuda":
            dev = h.dtype == torch.bfloat16 and torch.cuda.get_device_capability(h.device) >= (8, 0)
        else:
            dev = h.device.type == "cpu" and h.dtype in (torch.float32, torch.bfloat16)
        weights = (self.w_gate_up, self.w_down)
        same = all(t.dtype == h.dtype and t.data_ptr() % 16 == 0 for t in weights)
        rows = all(n * h.element_size() % 16 == 0 for n in (self.dim, self.hidden))
        return dev and same and rows

    def _counts(self, experts: Tensor) -> Tensor:
        """(E,) int64 slots per expert; a scatter_add rather than bincount, which syncs with the host on CUDA."""
        flat = experts.reshape(-1)
        return torch.zeros(self.n_routed, dtype=torch.long, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))

    def _dense(self, h: Tensor, w: Tensor, experts: Tensor) -> Tensor:
        """Every expert on every token, gated by an (N, E) matrix that is zero off the chosen experts."""
        n, (e, d, h2) = h.shape[0], self.w_gate_up.shape
        gates = h.new_zeros(n, e).scatter_add(1, experts, w)  # (N, E)
        gate_up = (h @ self.w_gate_up.permute(1, 0, 2).reshape(d, e * h2)).view(n, e, h2)
        gate, up = gate_up.chunk(2, dim=-1)
        act = F.silu(gate) * up * gates.unsqueeze(-1)  # (N, E, H)
        return act.reshape(n, e * (h2 // 2)) @ self.w_down.reshape(e * (h2 // 2), d)

    @torch.no_grad()
    def update_bias(self, gamma: float = 1e-3) -> Tensor:
        """b ← update_bias(b, load, γ) with the load summed since the last call (``last_load`` if none was
        accumulated, e.g. in eval mode); resets ``load_accum``; returns the load used (E,) as float."""
        load = self.load_accum.float() if self.load_accum.sum() > 0 else self.last_load.to(self.bias.device)
        self.bias.copy_(update_bias(self.bias, load, gamma))
        self.load_accum.zero_()
        return load


@torch.no_grad()
def copy_from_transformers(moe: MoE, hf_moe: nn.Module) -> MoE:
    """Load a transformers ``DeepseekV3MoE`` (``gate``, ``experts``, ``shared_experts``) into ``moe``, in place.

    Layouts: gate_up_proj (E, 2H, D) -> w_gate_up (E, D, 2H); down_proj (E, D, H) -> w_down (E, H, D).
    """
    moe.router.weight.copy_(hf_moe.gate.weight)
    moe.bias.copy_(hf_moe.gate.e_score_correction_bias)
    moe.w_gate_up.copy_(hf_moe.experts.gate_up_proj.transpose(1, 2))
    moe.w_down.copy_(hf_moe.experts.down_proj.transpose(1, 2))
    if moe.shared is not None:
        moe.shared.load_state_dict(hf_moe.shared_experts.state_dict())
    return moe


# ---------------------------------------------------------------------------------------------
# transformers' DeepSeek-V3 routers: the bias update it does not do
# ---------------------------------------------------------------------------------------------
def hf_routers(model: nn.Module) -> list[nn.Module]:
    """The V3 routers of a transformers model (modules with an ``e_score_correction_bias`` buffer,
    e.g. ``DeepseekV3TopkRouter``, whose forward returns (logits, weights, indices))."""
    return [m for m in model.modules() if hasattr(m, "e_score_correction_bias")]


class RouterBalancer:
    """V3's auxiliary-loss-free balancing for a transformers model: forward hooks count the tokens
    each router sends to each expert (training forwards only), and after every ``optimizer.step()``
    each router's ``e_score_correction_bias`` moves by ``update_bias(b, load, γ)``; the counts reset.

        balancer = RouterBalancer(model, gamma=1e-3).attach(optimizer)

    Padding tokens route too and are counted (a forward hook sees no attention mask).
    """

    def __init__(self, model: nn.Module, gamma: float = 1e-3):
        self.routers = hf_routers(model)
        self.gamma = gamma
        self.loads = [torch.zeros(len(r.e_score_correction_bias)) for r in self.routers]
        self.handles = [r.register_forward_hook(self._hook(i)) for i, r in enumerate(self.routers)]

    def _hook(self, i: int):
        def count(module: nn.Module, args: object, output: object) -> None:
            indices = output[-1] if isinstance(output, tuple) else output
            if module.training:
                self.loads[i] += torch.bincount(indices.reshape(-1).cpu(), minlength=len(self.loads[i])).float()
        return count

    def attach(self, optimizer: torch.optim.Optimizer) -> RouterBalancer:
        self.handles.append(optimizer.register_step_post_hook(lambda *_: self.update_bias()))
        return self

    @torch.no_grad()
    def update_bias(self, gamma: float | None = None) -> list[Tensor]:
        """Move every router's bias with its counted load; returns the loads used, then resets them."""
        used = []
        for r, load in zip(self.routers, self.loads):
            if load.sum() > 0:
                bias = r.e_score_correction_bias
                bias.copy_(update_bias(bias.float().cpu(), load, self.gamma if gamma is None else gamma).to(bias))
            used.append(load.clone())
            load.zero_()
        return used

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def attach_router_balancer(model: nn.Module, optimizer: torch.optim.Optimizer, gamma: float) -> RouterBalancer | None:
    """A ``RouterBalancer`` on ``optimizer`` when ``model`` has V3 routers and γ > 0, else None."""
    if gamma <= 0 or not hf_routers(model):
        return None
    return RouterBalancer(model, gamma).attach(optimizer)
