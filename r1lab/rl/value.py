"""PPO's value model: a transformer backbone (from the policy's checkpoint) and a scalar head.

``ValueModel.from_pretrained(path)`` loads the backbone with ``AutoModel`` and a zero-initialised
linear head (so the first values are 0); ``save_pretrained(dir)`` writes the backbone in HF
format plus ``value_head.safetensors``. ``completion_values(ids, start)`` returns (N, L − start)
values aligned with ``batch.completion_logprobs``: column t holds V of the state just before
completion column t's token.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class ValueModel(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype = torch.float32) -> ValueModel:
        from safetensors.torch import load_file
        from transformers import AutoModel

        from r1lab.models import dtype_kwarg, quiet_hf

        with quiet_hf():
            backbone = AutoModel.from_pretrained(path, **dtype_kwarg(dtype))
        model = cls(backbone, backbone.config.hidden_size).to(dtype)
        head = Path(path) / "value_head.safetensors"
        if head.is_file():
            model.head.load_state_dict(load_file(str(head)))
        return model

    def completion_values(self, input_ids: torch.Tensor, start: int) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids).last_hidden_state  # (N, L, H)
        return self.head(hidden[:, start - 1 : -1, :]).squeeze(-1).float()

    def save_pretrained(self, path: str | Path, **kwargs) -> None:
        from safetensors.torch import save_file

        self.backbone.save_pretrained(path, **kwargs)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(Path(path) / "value_head.safetensors"))
