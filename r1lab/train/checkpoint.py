"""Training checkpoints: HF ``save_pretrained`` weights plus optimizer, RNG and step state.

Layout of ``RUN_DIR/checkpoint`` (written to ``checkpoint.tmp`` then renamed, so a kill -9 at
any moment leaves either the previous complete checkpoint or the new one, never a torn one)::

    checkpoint/policy/        model.safetensors, config.json, tokenizer files (LoRA runs: the
                              merged weights, plus lora_adapter.safetensors for --resume)
    checkpoint/ref/           reference model (only when it has been refreshed)
    checkpoint/value/         PPO value model (only with --algo ppo)
    checkpoint/state.pt       optimizer(s), scheduler, RNG states, step, counters

The policy directory loads in plain ``transformers`` (and so in vLLM) without conversion.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from r1lab.models import quiet_hf, save_tokenizer
from r1lab.train import lora


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def save(run_dir: str | Path, models: dict[str, Any], tokenizer, state: dict[str, Any]) -> Path:
    """Write ``models`` (name -> HF model or module with save_pretrained) and ``state`` atomically."""
    run_dir = Path(run_dir)
    final, tmp, old = run_dir / "checkpoint", run_dir / "checkpoint.tmp", run_dir / "checkpoint.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with quiet_hf():
        for name, model in models.items():
            if model is None:
                continue
            lora.plain(model).save_pretrained(tmp / name, safe_serialization=True)  # plain HF weights
            if lora.is_lora(model):
                lora.save_adapter(model, tmp / name)  # and the adapters, for --resume
            if tokenizer is not None and name == "policy":
                save_tokenizer(tokenizer, tmp / name)
    torch.save({**state, "rng": rng_state()}, tmp / "state.pt")
    _fsync_dir(tmp)
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    _fsync_dir(run_dir)
    if old.exists():
        shutil.rmtree(old)
    return final


def latest(run_dir: str | Path) -> Path | None:
    """The complete checkpoint of a run, if any (falls back to ``checkpoint.old`` if a kill
    landed between the two renames)."""
    run_dir = Path(run_dir)
    for name in ("checkpoint", "checkpoint.old"):
        path = run_dir / name
        if (path / "state.pt").is_file() and (path / "policy" / "config.json").is_file():
            return path
    return None


def load_state(path: Path) -> dict[str, Any]:
    return torch.load(path / "state.pt", map_location="cpu", weights_only=False)
