"""Normal output: one progress bar per command and no third-party noise (no transformers progress
bars, no deprecation warnings); the KV cache is handed over the way the installed transformers asks."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from r1lab.engine.kvcache import HFDecoder, cache_kwargs, returned_cache

ROOT = Path(__file__).resolve().parents[1]
NOISE = re.compile(r"Writing model shards|Loading weights|deprecat|Warning|warn\(", re.IGNORECASE)


def bars(stderr: str) -> set[str]:
    """The descriptions of the tqdm bars in a captured stderr ('zero: 50%|...' -> 'zero')."""
    out = set()
    for part in re.split(r"[\r\n]", stderr):
        m = re.match(r"\s*([\w ]+):\s+\d+%\|", part)
        if m:
            out.add(m.group(1).strip())
    return out


@pytest.mark.parametrize(("command", "bar"), [
    (["zero", "--steps", "2", "--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "16",
      "--eval-problems", "3", "--eval-k", "2", "--save-every", "1"], "zero"),
    (["eval", "--limit", "3", "--k", "2", "--max-new-tokens", "16"], "eval"),
])
def test_normal_output_is_one_bar_and_no_noise(command, bar, tiny_model_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "r1lab", *command, "--model", tiny_model_dir,
                          "--output-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not NOISE.search(out.stderr + out.stdout), (out.stderr + out.stdout)[-2000:]
    assert bars(out.stderr) == {bar}, out.stderr[-2000:]
    leftover = [x for x in re.split(r"[\r\n]", out.stderr) if x.strip() and not x.strip().startswith(bar + ":")]
    assert not leftover, leftover


def test_hf_decoder_passes_the_cache_without_warnings(tiny_model_dir):
    from r1lab.models import load_model

    model = load_model(tiny_model_dir)
    ids = torch.tensor([[5, 6, 7]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecation warning fails the test
        dec = HFDecoder(model)
        logits = dec.prefill(ids, torch.ones_like(ids), n=2, capacity=8)
        step = dec.step(logits.argmax(-1), torch.tensor([3, 3]))
    assert logits.shape[0] == 2 and step.shape == logits.shape


def test_cache_kwargs_follow_the_forward_signature():
    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, use_cache=None):
            return None

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return None

    c = object()
    assert cache_kwargs(New(), c) == {"cache": c}
    assert cache_kwargs(Old(), c) == {"past_key_values": c}

    class OutNew:
        cache = "a"

    class OutOld:
        past_key_values = "b"

    assert returned_cache(OutNew()) == "a" and returned_cache(OutOld()) == "b"
