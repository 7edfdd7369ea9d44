"""A KV cache for sampling that is written in place instead of grown by concatenation.

``transformers.DynamicCache`` appends each decode step's keys and values with ``torch.cat``,
which copies the whole cache every step (quadratic in the completion length): it was 39% of
rollout time on the tiny default (profile in docs/performance.md). ``PreallocatedLayer``
keeps one buffer per layer of shape (B, H_kv, capacity, D), writes step t's (B, H_kv, 1, D)
into column t, and hands the attention the view ``buffer[:, :, :t+1]``. Everything else
(masks, RoPE, attention kernels) is the model's own code: the layer is a drop-in
``DynamicLayer`` for any full-attention HF decoder.

    cache = preallocated_cache(model.config, capacity=prompt_len + max_new_tokens)
    out = model(input_ids=ids, use_cache=True, **cache_kwargs(model, cache))   # prefill
    cache.batch_repeat_interleave(n)   # share each prompt's KV among its n samples
    cache.batch_select_indices(keep)   # drop finished rows (copies only the filled columns)

Layers of other types (sliding-window, linear attention) keep the model's default layer.
"""

from __future__ import annotations

import inspect

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One attention layer's KV in a (B, H_kv, capacity, D) buffer; ``length`` columns filled.

    ``update(k, v)`` with k, v: (B, H_kv, T, D) writes columns [length, length + T) and returns
    views (B, H_kv, length + T, D). A write past ``capacity`` reallocates to twice the need.
    """

    def __init__(self, capacity: int, **kwargs):
        super().__init__(**kwargs)
        self.is_initialized = False  # set by CacheLayerMixin in transformers>=4.57, absent before
        self.capacity = capacity
        self.length = 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def _alloc(self, like: torch.Tensor, capacity: int) -> torch.Tensor:
        """An empty buffer shaped like ``like`` (B, H, T, D) with T = ``capacity``."""
        b, h, _, d = like.shape
        return like.new_empty((b, h, capacity, d))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self._k is None or end > self._k.shape[-2]:
            cap = max(self.capacity, end) if self._k is None else max(2 * end, self.capacity)
            new_k = self._alloc(key_states, cap)
            new_v = self._alloc(value_states, cap)
            if self._k is not None:
                new_k[:, :, : self.length] = self._k[:, :, : self.length]
                new_v[:, :, : self.length] = self._v[:, :, : self.length]
            self._k, self._v = new_k, new_v
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self.keys = self._k[:, :, :end]
        self.values = self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self, *args) -> int:  # 4.55 passes cache_position
        return self.length

    def _rebuild(self, select) -> None:
        """Replace the buffers by ``select(filled view)`` (new batch size), keeping the capacity."""
        if self._k is None:
            return
        filled_k = select(self._k[:, :, : self.length])
        filled_v = select(self._v[:, :, : self.length])
        cap = self._k.shape[-2]
        self._k = self._alloc(filled_k, cap)
        self._v = self._alloc(filled_v, cap)
        self._k[:, :, : self.length] = filled_k
        self._v[:, :, : self.length] = filled_v
        self.keys = self._k[:, :, : self.length]
        self.values = self._v[:, :, : self.length]

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._rebuild(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._rebuild(lambda t: t.index_select(0, indices))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self.length = max(0, self.length + tokens_to_remove)
        if self._k is not None:
            self.keys = self._k[:, :, : self.length]
            self.values = self._v[:, :, : self.length]

    def reset(self) -> None:
        self._k = self._v = None
        self.length = 0
        super().reset()


def cache_kwargs(model, cache) -> dict:
    """The keyword that hands ``cache`` to ``model.forward``: ``cache`` in transformers 5 (where
    ``past_key_values`` is a deprecated alias that warns), ``past_key_values`` in 4.x."""
    kind = type(model)
    name = _CACHE_ARG.get(kind)
    if name is None:
        params = inspect.signature(model.forward).parameters
        name = _CACHE_ARG[kind] = "cache" if "cache" in params else "past_key_values"
    return {name: cache}


def returned_cache(out):
    """The cache a forward pass returned (``out.cache`` in transformers 5, ``out.past_key_values`` in 4.x)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


_CACHE_ARG: dict[type, str] = {}


def dynamic_cache(config) -> DynamicCache:
    """``DynamicCache(config=config)``. transformers 4.55 reads ``config=`` as a static cache's
    layout and fails; there, a plain ``DynamicCache`` with one ``DynamicLayer`` per hidden layer."""
    try:
        return DynamicCache(config=config)
    except TypeError:
        cache = DynamicCache()
        cache.layers = [DynamicLayer() for _ in range(config.get_text_config(decoder=True).num_hidden_layers)]
        return cache


def preallocated_cache(config, capacity: int) -> DynamicCache:
    """A ``DynamicCache`` whose plain full-attention layers are ``PreallocatedLayer``s."""
    cache = dynamic_cache(config)
    if not cache.layers:  # configs without layer types: one layer per hidden layer
        n = config.get_text_config(decoder=True).num_hidden_layers
        cache.layers = [DynamicLayer() for _ in range(n)]
    cache.layers = [PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


class HFDecoder:
    """Decode through the model's own ``forward`` with a ``preallocated_cache``; works for any
    HF causal LM. Same interface as ``fastdecode.FastDecoder``:

    prefill(ids (P, W) left-padded, mask (P, W), n, capacity) -> last logits (P·n, V)
    step(tokens (N,), positions (N,)) -> logits (N, V)
    keep(alive (N,) bool) -> order (n_keep,): new row r holds old row order[r] (order kept)
    """

    def __init__(self, model):
        self.model = model

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, n: int, capacity: int) -> torch.Tensor:
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        self.cache = preallocated_cache(self.model.config, capacity=capacity)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                         **cache_kwargs(self.model, self.cache))
        self.cache = returned_cache(out)
        self.cache.batch_repeat_interleave(n)
        p, w = ids.shape
        # the attention mask of every step at once: prompt mask, then ones; step t uses [:, :w+t+1]
        self.mask = torch.cat([mask.repeat_interleave(n, dim=0), mask.new_ones(p * n, capacity - w)], dim=1)
        self.length = w
        return out.logits[:, -1, :].float().repeat_interleave(n, dim=0)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=tokens[:, None], attention_mask=self.mask[:, : self.length + 1],
                         position_ids=positions[:, None], use_cache=True, **cache_kwargs(self.model, self.cache))
        self.cache = returned_cache(out)
        self.length += 1
        return out.logits[:, -1, :].float()

    def keep(self, alive: torch.Tensor) -> torch.Tensor:
        order = alive.nonzero().squeeze(1)
        self.cache.batch_select_indices(order)
        self.mask = self.mask[order]
        return order
