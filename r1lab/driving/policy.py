"""The driving policy: a permutation-invariant scene encoder, DeepSeek-V3 MoE blocks, and a
categorical head over the waypoint codebook (``env.ANCHORS``). A ``transformers`` model:
``save_pretrained`` / ``DriverPolicy.from_pretrained`` (safetensors + config.json).

    e_ego = W_e · ego                                   (N, D)
    e_j   = MLP(other_j)                                (N, V, D)   one MLP for every vehicle
    h     = e_ego + Attn(q = e_ego, k = v = [null; e_1..e_V], mask = present)
    h     = h + MoE_l(RMSNorm(h))                       l = 1..L    (or a dense SwiGLU)
    π(a | scene) = softmax(W_π RMSNorm(h) + log valid)  (N, A)      A = N_ANCHORS
    V(scene)     = w_v · RMSNorm(h)                     (N,)        PPO's baseline

Why categorical over a codebook rather than a Gaussian over 2K coordinates: the log-probs that
GRPO's ratio needs are exact and cheap, the distribution is multimodal (overtake left or right;
a Gaussian averages them into the car ahead), every sample is a plan the tracker can follow,
and the LM driver (issue 15) can name an anchor with one token. The attention pooling makes
the encoder invariant to the order of the other vehicles (tested), and a learned null key keeps
it defined on an empty road. The router never sees the scenario category.

``dense=True`` replaces each MoE by one SwiGLU as wide as the MoE's active experts
((n_shared + experts_per_token) · hidden): the "equal active parameters" baseline.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

from r1lab.driving.env import EGO_FEATURES, N_ANCHORS, OTHER_FEATURES
from r1lab.moe import MoE, SwiGLU

INPUTS = ("ego", "others", "present", "valid")


class DriverConfig(PretrainedConfig):
    model_type = "r1lab_driver"

    def __init__(self, dim: int = 64, hidden: int = 64, layers: int = 2, heads: int = 4, n_routed: int = 8,
                 experts_per_token: int = 2, n_shared: int = 1, dense: bool = False, balance_alpha: float = 0.0,
                 n_anchors: int = N_ANCHORS, ego_features: int = EGO_FEATURES,
                 other_features: int = OTHER_FEATURES, **kwargs):
        self.dim, self.hidden, self.layers, self.heads = dim, hidden, layers, heads
        self.n_routed, self.experts_per_token, self.n_shared, self.dense = n_routed, experts_per_token, n_shared, dense
        self.balance_alpha = balance_alpha
        self.n_anchors, self.ego_features, self.other_features = n_anchors, ego_features, other_features
        super().__init__(**kwargs)


class SceneEncoder(nn.Module):
    """(ego (N, Fe), others (N, V, Fo), present (N, V) bool) -> h (N, D); order-invariant in V."""

    def __init__(self, cfg: DriverConfig):
        super().__init__()
        d = cfg.dim
        self.ego_in = nn.Linear(cfg.ego_features, d)
        self.other_in = nn.Sequential(nn.Linear(cfg.other_features, d), nn.GELU(), nn.Linear(d, d))
        self.null = nn.Parameter(torch.zeros(1, 1, d))
        self.attn = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.norm = nn.RMSNorm(d)

    def forward(self, ego: Tensor, others: Tensor, present: Tensor) -> Tensor:
        q = self.ego_in(ego)
        keys = torch.cat([self.null.expand(len(ego), 1, -1), self.other_in(others)], 1)
        pad = torch.cat([present.new_zeros(len(ego), 1), ~present.bool()], 1)  # True = ignore
        pooled, _ = self.attn(q.unsqueeze(1), keys, keys, key_padding_mask=pad, need_weights=False)
        return self.norm(q + pooled.squeeze(1))


class DriverPolicy(PreTrainedModel):
    config_class = DriverConfig
    base_model_prefix = "driver"
    _no_split_modules: list[str] = []

    def __init__(self, config: DriverConfig):
        super().__init__(config)
        d = config.dim
        self.encoder = SceneEncoder(config)
        self.norms = nn.ModuleList(nn.RMSNorm(d) for _ in range(config.layers))
        if config.dense:
            width = (config.n_shared + config.experts_per_token) * config.hidden
            self.blocks = nn.ModuleList(SwiGLU(d, width) for _ in range(config.layers))
        else:
            self.blocks = nn.ModuleList(
                MoE(d, config.hidden, config.n_routed, config.experts_per_token, config.n_shared,
                    balance_alpha=config.balance_alpha) for _ in range(config.layers))
        self.out_norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, config.n_anchors)
        self.value = nn.Linear(d, 1)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:  # keep torch's defaults; the MoE inits itself
        if isinstance(module, nn.Linear) and module is getattr(self, "head", None):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)

    @property
    def moes(self) -> list[MoE]:
        return [b for b in self.blocks if isinstance(b, MoE)]

    def forward(self, ego: Tensor, others: Tensor, present: Tensor, valid: Tensor,
                experts: list[Tensor] | None = None) -> dict[str, Tensor | list[Tensor]]:
        """logits (N, A) with invalid anchors at −inf, value (N,), experts [(N, K)] per MoE layer
        (pass a rollout's ``experts`` back to route the update identically), aux (balance loss)."""
        h = self.encoder(ego, others, present)
        chosen, aux, i = [], h.new_zeros(()), 0
        for norm, block in zip(self.norms, self.blocks):
            if isinstance(block, MoE):
                h = h + block(norm(h), experts=None if experts is None else experts[i])
                chosen.append(block.last_experts)
                aux = aux + block.last_aux_loss
                i += 1
            else:
                h = h + block(norm(h))
        z = self.out_norm(h)
        logits = self.head(z).float().masked_fill(~valid.bool(), float("-inf"))
        return {"logits": logits, "value": self.value(z).squeeze(-1).float(), "experts": chosen, "aux": aux}

    @torch.no_grad()
    def update_bias(self, gamma: float) -> list[Tensor]:
        """V3's auxiliary-loss-free balancing after an optimizer step; returns each layer's load."""
        return [m.update_bias(gamma) for m in self.moes]


def log_probs(logits: Tensor, actions: Tensor) -> Tensor:
    """log π(a) for actions (N,) under masked logits (N, A)."""
    return F.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def collate(observations: list[dict]) -> dict[str, Tensor]:
    """Stack ``Episode.observe()`` dicts into the policy's input tensors."""
    return {k: torch.as_tensor(np.stack([o[k] for o in observations])) for k in INPUTS}
