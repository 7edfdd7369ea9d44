"""A lean decode step for Llama-family HF models (Llama, Qwen2, Qwen3, Mistral), for sampling.

Why: one HF ``forward`` call costs ~3.5 ms of Python and mask building on the tiny default
whatever the batch (measured: 3.55 ms for 1 row, 15 ms for 256 rows); a decode step is one
token per row, so that glue was a third of rollout time. ``FastDecoder`` computes the same
function from the model's own weights, rotary table and activation with few tensor ops per
layer (each op costs ~5-10 µs on 2 CPU threads, which is all a late, few-row step costs):

    x      = embed(tokens)                                   (N, d)
    per layer (norms: one fused rms_norm in fp32, else the model's module):
      h    = input_layernorm(x);  q, k, v = [q|k|v]_proj(h)  (N, H, D), (N, H_kv, D)  one GEMM
      q, k = q_norm(q), k_norm(k)      (Qwen3 only)
      q|k  = q|k · cos[pos] + roll(q|k, D/2) · sin±[pos]   (rotate_half as a roll; one pass for q and k)
      K[:, :, t], V[:, :, t] = k, v    ((N, H_kv, cols, D) buffers, grown 32 columns at a time)
      s    = q·K[:, :, :t+1]ᵀ · scaling + bias   (N, H_kv, H/H_kv, t+1); bias = -inf on prompt pads
      x    = x + o_proj(softmax(s)·V)
      g, u = [gate|up]_proj(post_attention_layernorm(x))     one GEMM
      x    = x + down_proj(act(g) * u)
    logits = lm_head(norm(x))                                (N, V)

The prompt is prefilled by the model's own forward (any attention implementation); its KV is
copied into the buffers, repeated for the n samples of each prompt. Finished rows leave by
swap-remove: a dead row among the first n_keep rows takes the KV of a live row from the tail,
so a drop copies only as many rows as died. ``supported(model)`` says whether a model fits;
other models (MoE, sliding-window, soft-capped) use the plain HF path. Tests compare the
logits with the model's own forward over whole sequences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r1lab.engine.kvcache import cache_kwargs, dynamic_cache, returned_cache

FAMILIES = {"llama", "qwen2", "qwen3", "mistral"}


def supported(model) -> bool:
    """True when ``model`` is a Llama-family decoder this step reproduces exactly."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in FAMILIES:
        return False
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    inner = getattr(model, "model", None)
    need = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, a) for a in need) or not hasattr(model, "lm_head"):
        return False
    for layer in inner.layers:
        attn = getattr(layer, "self_attn", None)
        if attn is None or not all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "scaling")):
            return False
        if not all(hasattr(layer, a) for a in ("input_layernorm", "post_attention_layernorm", "mlp")):
            return False
        if not all(hasattr(layer.mlp, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            return False
        projections = [getattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj")]
        projections += [getattr(layer.mlp, a) for a in ("gate_proj", "up_proj", "down_proj")]
        if any(type(m) is not torch.nn.Linear for m in projections):  # e.g. LoRA layers: their
            return False  # adapters live outside .weight, which this step reads directly
    return True


def head_shape(model) -> tuple[int, int, int]:
    """(query heads H, key/value heads H_kv, head width D) of a Llama-family model."""
    cfg = model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(model.model.layers[0].self_attn, "head_dim", None) or cfg.hidden_size // heads
    return heads, kv_heads, head_dim


def signed_rope(cos: torch.Tensor, sin: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin·(−1 on the first half, +1 on the second)): then rotate_half(t)·sin = roll(t, D/2)·sin±,
    so RoPE is ``t·cos + t.roll(D/2, -1)·sin±``. Raises for partial RoPE (rotary width ≠ D)."""
    if cos.shape[-1] != head_dim:
        raise ValueError(f"rotary width {cos.shape[-1]} != head_dim {head_dim}: partial RoPE is not supported")
    half = head_dim // 2
    sign = torch.cat([-torch.ones(half), torch.ones(head_dim - half)]).to(sin)
    return cos, sin * sign


def fused_norm(mod):
    """The model's RMSNorm as one fused ``F.rms_norm`` when that is the same function (fp32,
    weight · x/rms(x) with ``variance_epsilon``), else the module itself."""
    w, eps = getattr(mod, "weight", None), getattr(mod, "variance_epsilon", None)
    if type(mod).__name__.endswith("RMSNorm") and w is not None and eps is not None and w.dtype == torch.float32:
        return lambda x: F.rms_norm(x, (w.shape[-1],), w, eps)
    return mod


class Linear:
    """y = x·Wᵀ + b for the row-concatenation of several ``nn.Linear``s (q|k|v, gate|up): one GEMM
    and one op dispatch instead of two or three. (Prepacking the weight into oneDNN's blocked
    layout was 2× faster per 1-row GEMV in isolation but gave no measurable end-to-end gain:
    +0.3% and +2.7% in 14-pair A/B runs at 64 and 256 rows; docs/performance.md.)
    """

    def __init__(self, mods: list[torch.nn.Module]):
        w = torch.cat([m.weight.detach() for m in mods]) if len(mods) > 1 else mods[0].weight.detach()
        biases = [getattr(m, "bias", None) for m in mods]
        self.bias = None
        if any(b is not None for b in biases):
            self.bias = torch.cat([b.detach() if b is not None else w.new_zeros(m.weight.shape[0])
                                   for m, b in zip(mods, biases)])
        self.sizes = [m.weight.shape[0] for m in mods]
        self.weight = w

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class FastDecoder:
    """Decode state of N rows: KV buffers, pad bias, rotary table. Use under ``torch.no_grad()``.

    prefill(ids (P, W) left-padded, mask (P, W), n, capacity) -> last logits (P·n, V)
    step(tokens (N,), positions (N,)) -> logits (N, V)
    keep(alive (N,) bool) -> order (n_keep,): new row r holds old row order[r]
    """

    grow_by = 32  # KV columns added at a time: a tight (N, H_kv, cols, D) view reads faster than a
    # view into a full-capacity buffer (measured: 1.24 vs 1.68 ms per layer, 256 rows × 61 columns)

    def __init__(self, model):
        self.model = model
        self.inner = model.model
        self.heads, self.kv_heads, self.head_dim = head_shape(model)
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.rows = 0
        self.length = 0

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, n: int, capacity: int) -> torch.Tensor:
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = dynamic_cache(self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                         **cache_kwargs(self.model, cache))
        p, w = ids.shape
        self.rows, self.length = p * n, w
        self.k, self.v = [], []
        for layer in returned_cache(out).layers:
            for store, src in ((self.k, layer.keys), (self.v, layer.values)):
                buf = src.new_empty((p * n, self.kv_heads, min(capacity, w + self.grow_by), self.head_dim))
                buf[:, :, :w] = src.repeat_interleave(n, dim=0)
                store.append(buf)
        dtype = self.k[0].dtype
        self.bias = torch.zeros((p * n, capacity), dtype=dtype, device=ids.device)
        self.bias[:, :w] = torch.where(mask.repeat_interleave(n, dim=0).bool(), 0.0, torch.finfo(dtype).min)
        self.linears = []
        for layer in self.inner.layers:
            a, m = layer.self_attn, layer.mlp
            self.linears.append((Linear([a.q_proj, a.k_proj, a.v_proj]), Linear([a.o_proj]),
                                 Linear([m.gate_proj, m.up_proj]), Linear([m.down_proj])))
        self.lm_head = Linear([self.model.lm_head])
        self.norms = [(fused_norm(layer.input_layernorm), fused_norm(layer.post_attention_layernorm)) for layer in self.inner.layers]
        self.final_norm = fused_norm(self.inner.norm)
        table = torch.arange(capacity, device=ids.device)[None]
        cos, sin = self.inner.rotary_emb(self.k[0], table)
        self.cos, self.sin = signed_rope(cos[0], sin[0], self.head_dim)  # (capacity, D)
        return out.logits[:, -1, :].float().repeat_interleave(n, dim=0)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        n, t = self.rows, self.length
        if t >= self.k[0].shape[2]:
            self._grow(t)
        hd, kvh, h = self.head_dim, self.kv_heads, self.heads
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # (N, 1, D)
        bias = self.bias[:n, None, None, : t + 1]
        x = self.inner.embed_tokens(tokens)
        for i, layer in enumerate(self.inner.layers):
            attn, (qkv, o_proj, gate_up, down), (norm1, norm2) = layer.self_attn, self.linears[i], self.norms[i]
            y = qkv(norm1(x)).view(n, h + 2 * kvh, hd)
            qk, v = y[:, : h + kvh], y[:, h + kvh :]
            if hasattr(attn, "q_norm"):  # Qwen3: per-head norms before RoPE
                qk = torch.cat([attn.q_norm(qk[:, :h]), attn.k_norm(qk[:, h:])], dim=1)
            qk = qk * cos + qk.roll(hd // 2, dims=-1) * sin
            q, k = qk[:, :h], qk[:, h:]
            self.k[i][:n, :, t] = k
            self.v[i][:n, :, t] = v
            keys, values = self.k[i][:n, :, : t + 1], self.v[i][:n, :, : t + 1]
            s = q.reshape(n, kvh, h // kvh, hd) @ keys.transpose(-1, -2)
            s = (s * attn.scaling + bias).softmax(-1, dtype=torch.float32).to(values.dtype)  # (N, H_kv, H/H_kv, t+1)
            x = x + o_proj((s @ values).reshape(n, h * hd))
            g, u = gate_up(norm2(x)).split(gate_up.sizes, dim=-1)
            x = x + down(layer.mlp.act_fn(g) * u)
        self.length = t + 1
        return self.lm_head(self.final_norm(x)).float()

    def _grow(self, t: int) -> None:
        """Move the live rows' KV into buffers ``grow_by`` columns longer (up to the capacity)."""
        cap = min(self.bias.shape[1], t + self.grow_by)
        if t >= cap:
            raise RuntimeError(f"FastDecoder capacity {self.bias.shape[1]} exhausted")
        for store in (self.k, self.v):
            for i, buf in enumerate(store):
                new = buf.new_empty((self.rows, buf.shape[1], cap, buf.shape[3]))
                new[:, :, :t] = buf[: self.rows, :, :t]
                store[i] = new

    def keep(self, alive: torch.Tensor) -> torch.Tensor:
        """Swap-remove the rows with alive False; returns old row index of each new row."""
        n_keep = int(alive.sum())
        order = torch.arange(self.rows, device=alive.device)
        dst = (~alive[:n_keep]).nonzero().squeeze(1)  # dead rows inside the kept prefix
        src = alive[n_keep:].nonzero().squeeze(1) + n_keep  # live rows beyond it
        if len(dst):
            t = self.length
            for buf in (*self.k, *self.v):
                buf[dst, :, :t] = buf[src, :, :t]
            self.bias[dst] = self.bias[src]
            order[dst] = src
        self.rows = n_keep
        return order[:n_keep]
