"""Completion log-probs with the prompt computed once per group (shared-prefix forward), for training.

A GRPO batch holds G completions of each prompt. A plain forward pass over the N = B·G rows
``prompt + completion`` computes every prompt G times; here each distinct prompt runs once
and its G completions attend to its keys/values (the same function, so the same log-probs and
the same gradients, up to float rounding; tests check both against the model's own forward):

    prompt pass      (U, P) distinct prompts, right-padded, causal     -> K_p, V_p per layer (U, H_kv, P, D)
                                                                          h_p = hidden of each prompt's last token (U, d)
    completion pass  (n, C−1) completion tokens c_0..c_{C−2} of n rows, position P_u + j,
                     attention over [K_p[u_i] masked beyond P_u | own keys, causal]
    log π(c_0)       from lm_head(norm(h_p[u_i]));   log π(c_j), j ≥ 1, from completion position j−1

Gradients: the prompt pass runs once per minibatch (``SharedPrompts``); its outputs enter each
micro-batch's graph as detached leaves, their gradients add up over the micro-batches, and
``SharedPrompts.backward`` pushes the sum through the prompt pass once. So the prompt's
forward and backward cost 1/G of the plain way, and the prompt's own positions never go
through ``lm_head`` (they predict nothing that is trained).

Layers are the model's own modules (q/k/v/o projections, MLP, norms: LoRA or other wrappers
keep working); the attention is ``F.scaled_dot_product_attention`` with the GQA heads shared.
Llama-family models only (``fastdecode.supported`` plus no attention dropout); anything else
takes the plain path in ``batch.completion_logprobs``.

``response_nll`` is the SFT loss through the same stack: one causal pass over right-padded rows
(no mask needed: a real position never sees the pads after it), then the final norm, ``lm_head``
and the cross-entropy on the M response positions only (M, V) instead of every position
(n, L, V), with the norms as one fused ``F.rms_norm`` each. The same function as the model's own
forward (``train.sft.response_nll_reference``), tested to float rounding with its gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r1lab.engine import fastdecode
from r1lab.train.batch import logits_to_logprobs


def supported(model) -> bool:
    """True when ``model`` is a Llama-family decoder this forward reproduces exactly."""
    if not fastdecode.supported(model):
        return False
    return float(getattr(model.config, "attention_dropout", 0.0) or 0.0) == 0.0


ROW_GRID = 256


def _row_grid(x: torch.Tensor) -> int:
    """Rows to round the token matrix up to: ``ROW_GRID`` under CPU bf16 autocast, else 0 (none).

    CPU bf16 matmuls run on oneDNN, which builds a kernel (a "primitive", ~5 ms and ~1.5 MB
    cached) for every new (M, K, N); bucketed micro-batches make M = n·L new nearly every time,
    so without a grid the build costs ~10× the matmul and the cache grows to ~1 GB. fp32
    matmuls (MKL) have no such cost, so they are not padded."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        return ROW_GRID
    return 0


class _RMSNorm(torch.autograd.Function):
    """y = x̂ · w with x̂ = x · r, r = (mean(x²) + ε)^−½ over the last dim, and its backward by hand:

        ∂L/∂w = Σ_rows g · x̂        ∂L/∂x = r · (g·w − x̂ · mean(g·w · x̂))

    On CPU ``F.rms_norm``'s backward is autograd through six ops (pow, mean, add, rsqrt, mul,
    mul); this one saves x̂ and r and runs in about two thirds of the time (2,048 × 192, fwd +
    bwd, 2 threads: 1.1–1.6 against 1.9–2.5 ms). Tested against ``F.rms_norm``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        xhat = x * r
        ctx.save_for_backward(xhat, r, w)
        return xhat * w

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        xhat, r, w = ctx.saved_tensors
        gw = (g * xhat).reshape(-1, xhat.shape[-1]).sum(0)
        gx = g * w
        return r * (gx - xhat * (gx * xhat).mean(-1, keepdim=True)), gw, None


def _norm(mod):
    """The model's RMSNorm: ``_RMSNorm`` on CPU with gradients, else ``fastdecode.fused_norm``."""
    fused = fastdecode.fused_norm(mod)
    if fused is mod or not torch.is_grad_enabled() or mod.weight.device.type != "cpu":
        return fused
    return lambda x: _RMSNorm.apply(x, mod.weight, mod.variance_epsilon)


def _pad_rows(t: torch.Tensor, pad: int) -> torch.Tensor:
    """(M, d) -> (M + pad, d) with zero rows after (``t`` itself when pad is 0). Zero rows stay
    finite through norms and MLPs and never reach the loss, so they add nothing to any gradient."""
    return F.pad(t, (0, 0, 0, pad)) if pad else t


class _Lean:
    """The decoder stack of a Llama-family model as a function of (hidden, positions, keys before)."""

    def __init__(self, model):
        self.model = model
        self.inner = model.model
        self.heads, self.kv_heads, self.head_dim = fastdecode.head_shape(model)

    def run(self, x: torch.Tensor, pos: torch.Tensor, past: list | None, bias: torch.Tensor | None):
        """x (n, L, d), pos (n, L); past: per layer (K, V) (n, H_kv, S, D) that every position sees
        before its own causal keys; bias: (n, 1, L, S + L) additive mask, or None for plain causal.
        Returns (hidden before the final norm (n, L, d), [(K, V)] of these L positions per layer)."""
        n, L, d = x.shape
        h, kvh, hd = self.heads, self.kv_heads, self.head_dim
        cos, sin = fastdecode.signed_rope(*self.inner.rotary_emb(x, pos), hd)  # (n, L, D): the model's own table
        cos, sin = cos[:, None], sin[:, None]
        rows, grid = n * L, _row_grid(x)
        pad = -rows % grid if grid else 0
        x = _pad_rows(x.reshape(rows, d), pad)  # (n·L + pad, d): the per-token layers see few distinct shapes
        kv_out = []
        for i, layer in enumerate(self.inner.layers):
            attn = layer.self_attn
            y = _norm(layer.input_layernorm)(x)
            if grid:  # cast once for q, k and v (autocast would cast y for each)
                y = y.to(torch.bfloat16)
            q = attn.q_proj(y)[:rows].view(n, L, h, hd)
            k = attn.k_proj(y)[:rows].view(n, L, kvh, hd)
            v = attn.v_proj(y)[:rows].view(n, L, kvh, hd).transpose(1, 2)
            if hasattr(attn, "q_norm"):  # Qwen3: per-head norms before RoPE
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k, v = q.transpose(1, 2).to(x.dtype), k.transpose(1, 2).to(x.dtype), v.to(x.dtype)  # fp32 under bf16 autocast
            q = q * cos + q.roll(hd // 2, dims=-1) * sin
            k = k * cos + k.roll(hd // 2, dims=-1) * sin
            kv_out.append((k, v))
            if past is not None:
                k, v = torch.cat([past[i][0], k], dim=2), torch.cat([past[i][1], v], dim=2)
            with torch.autocast(x.device.type, enabled=False):  # attention in fp32: bf16's backward is slow on CPU
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=bias is None,
                                                   scale=attn.scaling, enable_gqa=kvh != h)
            x = x + attn.o_proj(_pad_rows(o.transpose(1, 2).reshape(rows, h * hd), pad))
            z = _norm(layer.post_attention_layernorm)(x)
            x = x + layer.mlp(z.to(torch.bfloat16) if grid else z)
        return x[:rows].view(n, L, d), kv_out

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(_norm(self.inner.norm)(hidden))


def response_nll(model, ids: torch.Tensor, mask: torch.Tensor, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ −log π(ids[:, t+1] | ids[:, ≤t]) over positions with mask[:, t] > 0, their count).

    ids (n, L) right-padded; mask (n, L−1) float, 1 where column t+1 is a response token. One
    causal pass over ids[:, :−1]; only the masked positions' hidden states (M, d) reach the norm,
    ``lm_head`` and the cross-entropy (fp32 logits)."""
    lean = _Lean(model)
    x = ids[:, :-1]
    pos = torch.arange(x.shape[1], device=x.device).expand_as(x)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        hidden, _ = lean.run(lean.inner.embed_tokens(x), pos, None, None)
    keep = mask > 0
    logits = lean.logits(hidden[keep]).float()  # (M, V)
    nll = F.cross_entropy(logits, ids[:, 1:][keep], reduction="sum")
    return nll, mask.sum()


class SharedPrompts:
    """The prompt pass of one minibatch, shared by the micro-batches that use its prompts.

    prompts: the distinct prompts of a batch (token id lists); ``use``: indices of the ones to
    run (None = all); rows then name their prompt by its index in ``prompts``. Under grad mode
    the pass keeps its graph and hands out detached leaves; call ``backward()`` once after the
    micro-batches' backward passes (skip it if the step is dropped: the leaves' gradients are
    then simply discarded).
    """

    def __init__(self, model, prompts: list[list[int]], pad_id: int, use: list[int] | None = None):
        self.lean = _Lean(model)
        device = next(model.parameters()).device
        use = list(range(len(prompts))) if use is None else sorted(set(use))
        self.lengths = torch.tensor([len(p) for p in prompts], device=device)  # of every prompt
        self.remap = torch.full((len(prompts),), -1, dtype=torch.long, device=device)
        self.remap[use] = torch.arange(len(use), device=device)
        width = max(len(prompts[u]) for u in use)
        ids = torch.full((len(use), width), pad_id, dtype=torch.long, device=device)
        for r, u in enumerate(use):
            ids[r, : len(prompts[u])] = torch.tensor(prompts[u], dtype=torch.long)
        run_len = self.lengths[use]
        pos = torch.arange(width, device=device).expand(len(use), width)
        x = self.lean.inner.embed_tokens(ids)
        hidden, kv = self.lean.run(x, pos, None, None)  # right padding: real positions never see pads
        last = hidden[torch.arange(len(use), device=device), run_len - 1]  # (U, d)
        self._roots = [t for pair in kv for t in pair] + [last]
        self.grad = torch.is_grad_enabled() and last.requires_grad
        leaves = [t.detach().requires_grad_(self.grad) for t in self._roots]
        self.kv = [(leaves[2 * i], leaves[2 * i + 1]) for i in range(len(kv))]
        self.last = leaves[-1]
        self._leaves = leaves
        self.width = width
        dtype = hidden.dtype
        cols = torch.arange(width, device=device)
        self.bias = torch.where(cols[None] < run_len[:, None], 0.0, torch.finfo(dtype).min).to(dtype)  # (U, P)

    def logprobs(self, group: torch.Tensor, completions: torch.Tensor, temperature: float = 1.0,
                 with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log π(c_j | prompt, c_<j) for n rows -> (n, C), completion-aligned (column j = token j).

        group: (n,) index of each row's prompt in ``prompts``; completions: (n, C) token ids, right-padded
        (columns past a row's end are computed and meaningless: mask them). Entropy (n, C)
        without gradient when asked."""
        lean = self.lean
        n, c = completions.shape
        p_len = self.lengths[group]
        group = self.remap[group]
        if bool((group < 0).any()):
            raise ValueError("a row's prompt was not in this SharedPrompts' ``use``")
        hidden = [self.last[group][:, None]]  # (n, 1, d): predicts c_0
        if c > 1:
            tokens = completions[:, : c - 1]
            pos = p_len[:, None] + torch.arange(c - 1, device=tokens.device)[None]
            past = [(k[group], v[group]) for k, v in self.kv]
            dtype = self.last.dtype
            causal = torch.full((c - 1, c - 1), torch.finfo(dtype).min, dtype=dtype, device=tokens.device).triu(1)
            bias = torch.cat([self.bias[group][:, None, :].expand(n, c - 1, self.width),
                              causal[None].expand(n, c - 1, c - 1)], dim=2)[:, None]  # (n, 1, C−1, P + C−1)
            out, _ = lean.run(lean.inner.embed_tokens(tokens), pos, past, bias)
            hidden.append(out)
        return logits_to_logprobs(lean.logits(torch.cat(hidden, dim=1)), completions, temperature, with_entropy)

    def backward(self) -> None:
        """Push the micro-batches' summed gradients of the shared prompt outputs through the prompt pass."""
        if not self.grad:
            return
        pairs = [(r, leaf.grad) for r, leaf in zip(self._roots, self._leaves) if leaf.grad is not None]
        if pairs:
            torch.autograd.backward([r for r, _ in pairs], [g for _, g in pairs])
        self._roots, self._leaves = [], []
