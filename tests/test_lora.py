"""LoRA (peft): adapters only train, merged checkpoints load in plain transformers, resume puts the
same adapters back, and the fused decode paths step aside for adapted models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft", reason="the peft extra is not installed")

from r1lab.config import ConfigError  # noqa: E402
from r1lab.engine import fastdecode  # noqa: E402
from r1lab.models import load_model  # noqa: E402
from r1lab.train import lora  # noqa: E402


def _ids(n=2, t=12, vocab=300):
    return torch.randint(5, vocab, (n, t), generator=torch.Generator().manual_seed(0))


def test_apply_trains_only_adapters_and_starts_as_the_base(tiny_model_dir):
    base = load_model(tiny_model_dir).eval()
    x = _ids()
    want = base(x).logits
    model = lora.apply(load_model(tiny_model_dir), rank=4, alpha=8.0).eval()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert torch.allclose(model(x).logits, want, atol=1e-6)  # B = 0: the adapted model is the base
    assert lora.is_lora(model) and not lora.is_lora(base)
    assert fastdecode.supported(base) and not fastdecode.supported(model)  # adapters live outside .weight


def test_merged_copy_equals_the_adapted_model_and_loads_in_plain_transformers(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = lora.apply(load_model(tiny_model_dir), rank=4, alpha=8.0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)  # a trained adapter
    model.eval()
    x = _ids()
    merged = lora.merged(model).eval()
    assert not lora.is_lora(merged) and lora.is_lora(model)  # the original keeps its adapters
    assert torch.allclose(merged(x).logits, model(x).logits, atol=1e-4)
    merged.save_pretrained(tmp_path / "m")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert torch.allclose(plain(x).logits, model(x).logits, atol=1e-4)
    # the adapters round-trip into a freshly adapted base
    lora.save_adapter(model, tmp_path / "m")
    again = lora.apply(load_model(tiny_model_dir), rank=4, alpha=8.0).eval()
    lora.load_adapter(again, tmp_path / "m")
    assert torch.allclose(again(x).logits, model(x).logits, atol=1e-6)


def test_bad_targets_and_missing_adapters_are_config_errors(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="no Linear module named 'qkv'"):
        lora.apply(load_model(tiny_model_dir), rank=2, alpha=4.0, targets=["qkv"])
    with pytest.raises(ConfigError, match="no LoRA adapters"):
        lora.load_adapter(lora.apply(load_model(tiny_model_dir), 2, 4.0), tmp_path)


def _rows(path: Path, n: int = 40) -> str:
    with open(path, "w") as fh:
        for i in range(n):
            a, b = i % 7 + 1, i % 5 + 2
            fh.write(json.dumps({"prompt": f"{a}+{b}=", "response": f"</think><answer>{a + b}</answer>"}) + "\n")
    return str(path)


def test_sft_with_lora_learns_saves_plain_weights_and_resumes(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from r1lab.commands.sft import Config, run

    data = _rows(tmp_path / "rows.jsonl")
    kw = dict(model=tiny_model_dir, data=data, lr=3e-3, warmup=1, tokens_per_step=256, eval_share=0.2,
              eval_every=0, save_every=1, report_to="none", lora_rank=8, lora_alpha=16.0)
    out = run(Config(output_dir=str(tmp_path / "run"), epochs=2, **kw))
    assert out["final_eval_loss"] < out["start_eval_loss"]
    ckpt = tmp_path / "run" / "checkpoint" / "policy"
    assert (ckpt / lora.ADAPTER_FILE).is_file() and (ckpt / "config.json").is_file()
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for (n, p), (_, q) in zip(final.named_parameters(), base.named_parameters()) if not torch.equal(p, q)]
    assert changed and all(any(t in n for t in lora.DEFAULT_TARGETS) for n in changed)  # only adapted weights moved
    more = run(Config(output_dir=str(tmp_path / "run"), epochs=3, resume=True, **kw))  # adapters put back
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(more["steps"])) and more["steps"] > out["steps"]


def test_zero_with_lora_runs_and_writes_plain_weights(tmp_path):
    from transformers import AutoModelForCausalLM

    from r1lab.commands.zero import Config, run
    from r1lab.models import resolve_model

    run(Config(task="countdown", output_dir=str(tmp_path / "z"), steps=2, prompts_per_step=4, group_size=8,
               max_new_tokens=48, eval_every=0, eval_problems=4, report_to="none", lora_rank=4, lora_alpha=8.0,
               lr=1e-3, warmup=0, threads=1))  # the shipped base: some groups have a nonzero advantage
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "z" / "final")
    assert not lora.is_lora(final)
    base = AutoModelForCausalLM.from_pretrained(resolve_model(""))
    assert any(not torch.equal(p, q) for p, q in zip(final.parameters(), base.parameters()))
