"""The shipped base and the pretrain command: plain-transformers loading, tokenizer, determinism, CLI."""

from __future__ import annotations

import subprocess
import sys

import torch

from r1lab.models import DEFAULT_MODEL, load_tokenizer


def test_shipped_base_loads_without_r1lab():
    code = (
        "import sys\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"m = AutoModelForCausalLM.from_pretrained({DEFAULT_MODEL!r})\n"
        f"t = AutoTokenizer.from_pretrained({DEFAULT_MODEL!r})\n"
        "assert not any(k.startswith('r1lab') for k in sys.modules), 'r1lab was imported'\n"
        "ids = t('Use 3 5 7 to make 22.\\n<think>', return_tensors='pt').input_ids\n"
        "out = m.generate(ids, max_new_tokens=5, do_sample=False)\n"
        "print(m.config.model_type, sum(p.numel() for p in m.parameters()), out.shape[1] > ids.shape[1])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert res.returncode == 0, res.stderr[-2000:]
    kind, params, grew = res.stdout.split()
    assert kind == "qwen2" and 1e6 < int(params) < 5e6 and grew == "True"


def test_tokenizer_round_trips_any_text():
    tok = load_tokenizer()
    for text in ["Use 12 3 5 to make 51.\n<think>5*3=15 15*12=180 no wait, let me try again.</think><answer>(3+5)*12</answer>",
                 "用 8 8 4 凑出 12。等等，让我检查一下。", "Ünïcödé ∑ x² — 😀 \\boxed{\\frac{1}{2}}"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert len(tok("<think></think><answer></answer>", add_special_tokens=False)["input_ids"]) == 4
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id is not None


def test_pretrain_is_deterministic(tmp_path):
    from r1lab.commands.pretrain import Config, run

    kw = dict(steps=3, batch_size=4, seq_len=32, documents=500, hidden_size=64, layers=1, vocab_size=300, warmup=1)
    run(Config(output=str(tmp_path / "a"), **kw))
    run(Config(output=str(tmp_path / "b"), **kw))
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()


def test_pretraining_windows_start_at_documents():
    from r1lab.commands.pretrain import window_starts

    # documents at 0, 5 and 9 in a 12-token stream; a window of 4 needs 5 tokens from its start
    assert window_starts([0, 5, 9], 12, 4).tolist() == [0, 5]
    assert window_starts([0, 5, 9], 14, 4).tolist() == [0, 5, 9]


def test_cli_help_lists_commands():
    res = subprocess.run([sys.executable, "-m", "r1lab", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for cmd in ("pretrain", "eval", "score", "zero", "report"):
        assert cmd in res.stdout
    res = subprocess.run([sys.executable, "-m", "r1lab", "zero", "--prompts-per-step", "3", "--minibatches", "2",
                          "--output-dir", "/tmp/never"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "minibatches" in res.stderr


def test_shipped_tokenizer_encodes_exactly_as_its_tokenizer_json():
    # transformers 5's AutoTokenizer would load it as Qwen2Tokenizer, whose pre-tokenizer splits
    # "\n    " differently from the tokenizer.json the base was trained with
    from pathlib import Path

    from tokenizers import Tokenizer

    from r1lab.models import DEFAULT_MODEL, load_tokenizer
    from r1lab.tasks.corpus import documents

    raw = Tokenizer.from_file(str(Path(DEFAULT_MODEL) / "tokenizer.json"))
    tok = load_tokenizer("")
    for text in documents(300, seed=4) + ["def f(x):\n    return x * 3 + 4", "骑士总说真话 Zoey   is\ta knight"]:
        assert tok(text, add_special_tokens=False)["input_ids"] == raw.encode(text, add_special_tokens=False).ids


def test_shipped_student_is_a_quarter_of_the_base_on_its_tokenizer():
    from r1lab.models import count_parameters, load_model, load_tokenizer

    base, student = load_model(""), load_model("student")
    assert 0.2 < count_parameters(student) / count_parameters(base) < 0.35
    assert load_tokenizer("student").get_vocab() == load_tokenizer("").get_vocab()
