"""Load and save Hugging Face models and tokenizers; the tiny default's config and tokenizer.

Every model in r1lab is a plain ``transformers`` causal LM. ``load_model`` and
``load_tokenizer`` take a local directory or a hub id through the same code
(``from_pretrained``). ``DEFAULT_MODEL`` is the base model that ``r1lab pretrain`` builds and
the repository ships: a Qwen2 architecture with a tiny config and a byte-level BPE tokenizer
trained by ``tokenizers`` on r1lab's synthetic corpus. Both load with nothing from r1lab:

    AutoModelForCausalLM.from_pretrained("r1lab/assets/base")
    AutoTokenizer.from_pretrained("r1lab/assets/base")
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch

from r1lab.config import ConfigError

DEFAULT_MODEL = str(Path(__file__).resolve().parent / "assets" / "base")
DEFAULT_STUDENT = str(Path(__file__).resolve().parent / "assets" / "student")  # `r1lab pretrain --preset student`
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]


def build_tokenizer(texts: list[str], vocab_size: int = 512):
    """Byte-level BPE over digits kept one per token (so arithmetic is per digit).

    Returns a ``PreTrainedTokenizerFast`` with eos/pad set; the think/answer tags are single
    added tokens. Any Unicode string encodes (byte fallback through the byte alphabet).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(r"<\/?(think|answer)>", behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        bos_token=None,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    fast.add_tokens(TAG_TOKENS)
    return fast


def tiny_config(vocab_size: int, **overrides: Any):
    """The default base's architecture: a 4-layer Qwen2 (≈2M parameters)."""
    from transformers import Qwen2Config

    cfg = dict(
        vocab_size=vocab_size,
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        use_cache=True,
    )
    cfg.update(overrides)
    return Qwen2Config(**cfg)


def resolve_model(name: str | None) -> str:
    """'' / None / 'default' -> the shipped base; 'student' -> the shipped student; else a path or hub id."""
    if name == "student":
        if not (Path(DEFAULT_STUDENT) / "config.json").is_file():
            raise ConfigError(f"the student base is missing at {DEFAULT_STUDENT}; build it with "
                              "`r1lab pretrain --preset student`")
        return DEFAULT_STUDENT
    if not name or name == "default":
        if not (Path(DEFAULT_MODEL) / "config.json").is_file():
            raise ConfigError(
                f"the default base model is missing at {DEFAULT_MODEL}; build it with `r1lab pretrain`"
            )
        return DEFAULT_MODEL
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        if not (path / "config.json").is_file():
            raise ConfigError(f"model directory {name!r} not found (no config.json there)")
        return str(path)
    return name  # a hub id


@contextlib.contextmanager
def quiet_hf():
    """transformers' own progress bars ("Loading weights", "Writing model shards") off inside:
    a command shows one progress bar, its own."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _load(loader, name: str | None, **kwargs: Any):
    """``loader.from_pretrained`` with a one-line ``ConfigError`` when the model cannot be had
    (a hub id offline or misspelt, a directory that is not a model)."""
    where = resolve_model(name)
    try:
        with quiet_hf():
            return loader.from_pretrained(where, **kwargs)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot load model {where!r}: {first}") from exc


def load_tokenizer(name: str | None = None):
    from transformers import AutoTokenizer

    tok = _load(_tokenizer_class(name) or AutoTokenizer, name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _tokenizer_class(name: str | None):
    """``PreTrainedTokenizerFast`` for a local tokenizer saved as a plain fast tokenizer (r1lab's own
    models): transformers 5's ``AutoTokenizer`` would load it as the model type's class
    (``Qwen2Tokenizer``), whose own pre-tokenizer splits "\\n    " differently from the
    ``tokenizer.json`` the model was trained with. None (= ``AutoTokenizer``) for anything else."""
    import json

    from transformers import PreTrainedTokenizerFast

    cfg = Path(resolve_model(name)) / "tokenizer_config.json"
    if cfg.is_file() and (cfg.parent / "tokenizer.json").is_file():
        cls = json.loads(cfg.read_text(encoding="utf-8")).get("tokenizer_class")
        if cls in ("PreTrainedTokenizerFast", "TokenizersBackend"):
            return PreTrainedTokenizerFast
    return None


def pad_id(tok) -> int:
    """The id that pads training batches: the tokenizer's pad token, else its EOS token."""
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA, float32 elsewhere; else the torch dtype of that name."""
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def dtype_kwarg(dtype: torch.dtype) -> dict:
    """``from_pretrained``'s dtype keyword: ``dtype`` from transformers 4.56 on (``torch_dtype``
    is deprecated there and warns in 5), ``torch_dtype`` before (``dtype`` is not known there)."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def load_model(name: str | None = None, dtype: str = "auto", device: str = "cpu"):
    """A causal LM from a local directory or hub id, in eval mode, on ``device``.

    ``dtype``: 'auto' (float32 on CPU, bfloat16 on CUDA), 'float32', 'bfloat16', 'float16'.
    """
    from transformers import AutoModelForCausalLM

    attn = "sdpa"
    model = _load(AutoModelForCausalLM, name, **dtype_kwarg(resolve_dtype(dtype, device)), attn_implementation=attn)
    return model.to(device).eval()


def save_tokenizer(tokenizer, path: str | os.PathLike) -> None:
    """``tokenizer.save_pretrained``, readable by transformers 4.x too: 5.x names a plain fast
    tokenizer's class ``TokenizersBackend``, which 4.x does not know; ``PreTrainedTokenizerFast``
    loads as the same tokenizer in both."""
    import json

    tokenizer.save_pretrained(path)
    cfg_file = Path(path) / "tokenizer_config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        if cfg.get("tokenizer_class") == "TokenizersBackend":
            cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
            cfg_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_pretrained_atomic(model, tokenizer, path: str | os.PathLike) -> None:
    """Write model + tokenizer with ``save_pretrained`` into a temp dir, then rename into place."""
    import shutil

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    with quiet_hf():
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp)
    old = path.with_name(path.name + ".old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        path.rename(old)
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old)


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
