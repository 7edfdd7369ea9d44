"""Shared fixtures: a tiny model built by `r1lab pretrain` in seconds, and the shared data path."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared benchmark data beside the repository), which is absent")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A 1-layer, 64-wide Qwen2 + BPE tokenizer from a few pretraining steps (a few seconds)."""
    from r1lab.commands.pretrain import Config, run

    out = tmp_path_factory.mktemp("tiny") / "model"
    run(Config(output=str(out), steps=8, batch_size=8, seq_len=64, documents=3000, hidden_size=64, layers=1,
               vocab_size=320, warmup=2))
    return str(out)
