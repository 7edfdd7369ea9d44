"""LoRA through peft (the ``peft`` extra) for ``r1lab sft`` and ``r1lab zero``.

    W x  ->  W x + (α / r) · B A x        A (r, d_in) random, B (d_out, r) = 0 at the start

``apply`` injects adapters into the model in place (``peft.inject_adapter_in_model``): the model
keeps its transformers class and its forward, only the targeted Linear layers become LoRA layers,
and only the adapters train (the base weights are frozen). Checkpoints stay plain transformers
weights: ``merged`` returns a copy with every adapter folded into its base weight (peft's own
``merge``), which is what ``checkpoint.save`` and the final save write; the adapters alone are
written next to them (``ADAPTER_FILE``) so that ``--resume`` continues the same low-rank run: the
base is loaded again, the adapters put back, and the optimizer state (over the adapters only)
matches.

r1lab's fused decode step and shared-prompt forward read weights directly, so they switch
themselves off for a model with adapters (``engine.fastdecode.supported`` requires plain
``nn.Linear`` projections); rollouts then run through the model's own forward.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from r1lab.config import ConfigError

ADAPTER_FILE = "lora_adapter.safetensors"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraFields:
    """The LoRA flags of a training command (inherited by ``SFTSettings`` and ``RLSettings``)."""

    lora_rank: int = field(default=0, metadata={"help": "LoRA rank r (0 = train every weight)"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA α: the update is scaled by α / r"})
    lora_targets: list[str] = field(default_factory=list, metadata={
        "help": "module names that get adapters (default: the attention and MLP projections)"})

    def validate_lora(self) -> None:
        if self.lora_rank < 0 or self.lora_alpha <= 0:
            raise ConfigError(f"lora_rank must be >= 0 and lora_alpha > 0, got {self.lora_rank} and {self.lora_alpha}")
        if self.lora_rank > 0:
            try:
                import peft  # noqa: F401
            except ImportError as exc:
                raise ConfigError("--lora-rank needs peft: pip install 'r1lab[peft]'") from exc


def apply(model: nn.Module, rank: int, alpha: float, targets: list[str] | tuple[str, ...] = ()) -> nn.Module:
    """Inject LoRA adapters (rank r, scale α / r) into ``model`` in place and freeze the rest."""
    from peft import LoraConfig, inject_adapter_in_model

    names = list(targets or DEFAULT_TARGETS)
    present = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in names if t not in present]
    if missing:
        raise ConfigError(f"lora_targets: the model has no Linear module named {missing[0]!r} "
                          f"(it has: {', '.join(sorted(present))})")
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=names, lora_dropout=0.0), model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def is_lora(model: Any) -> bool:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return False
    return any(isinstance(m, LoraLayer) for m in model.modules())


def merged(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every adapter folded in (W ← W + (α/r) B A) and the LoRA layers
    replaced by their plain base layers: a model that loads in plain transformers."""
    from peft.tuners.lora import LoraLayer

    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent_name) if parent_name else out, child, module.get_base_layer())
    for p in out.parameters():
        p.requires_grad_(True)
    return out


def plain(model: nn.Module) -> nn.Module:
    """The model to save: ``merged(model)`` when it has adapters, else the model itself."""
    return merged(model) if is_lora(model) else model


def save_adapter(model: nn.Module, directory: str | Path) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, str(Path(directory) / ADAPTER_FILE))


def load_adapter(model: nn.Module, directory: str | Path) -> None:
    """Put a checkpoint's adapters back into a model that ``apply`` prepared the same way."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(directory) / ADAPTER_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no LoRA adapters in this checkpoint (was it trained without --lora-rank?)")
    result = set_peft_model_state_dict(model, load_file(str(path)))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ConfigError(f"{path}: adapters do not match the model (e.g. {unexpected[0]})")
