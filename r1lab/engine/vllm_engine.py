"""A rollout engine on vLLM, colocated with the trainer: same interface and conventions as ``HFEngine``.

    engine = VLLMEngine(model, tokenizer, weights_dir="runs/x/vllm")   # writes the model once, starts vLLM
    out = engine.generate(prompts, SamplingParams(max_new_tokens=128, temperature=1.0), n=16)
    ...optimizer.step()...
    engine.sync_weights(model)                                          # new weights in place, no disk

How it works:
1. Start-up: the training model and its tokenizer are written with ``save_pretrained`` to
   ``weights_dir``, and a ``vllm.LLM`` loads them (the model's dtype; on CPU eager mode and a
   KV cache of ``VLLM_CPU_KVCACHE_SPACE`` GiB, 1 unless set). ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
   is forced: the engine core and its one worker run in this process, so the weights can be
   pushed in without a copy through a socket, and vLLM's CPU thread binding (done only for
   worker processes) does not happen: vLLM runs on this process's torch threads. The CPU worker
   replaces ``torch.set_num_threads`` with a no-op and seeds random / numpy / torch while it
   starts; the original function and the RNG states are put back. (On a GPU: 30% of its
   memory by default, ``gpu_memory_utilization``, the rest for training.)
2. Generate: prompts go in as token ids (``tokenizer(p, add_special_tokens=False)``, like
   ``HFEngine``), one request per sample, k = ``stream_offset`` + i·n + j for sample j of
   prompt i, with vLLM seed hash(seed, k): vLLM's sampler draws each seeded request's noise
   from its own generator, so a sample depends on (seed, k, the model) and not on its
   batch-mates, as in ``HFEngine`` (a rank's share of a batch samples what one process would;
   the tokens differ from HFEngine's, the distribution is the same). Stop strings that are each one added token
   (``</answer>`` in r1lab's tokenizer) become ``stop_token_ids`` and vLLM does no
   detokenization; any other stop string goes to vLLM as a string
   (``include_stop_str_in_output``). Completion ids include the EOS / stop token that ended
   the sample; the text is decoded here with the same tokenizer and rule as ``HFEngine``
   (without EOS, cut right after the stop string), and the finish reason is "eos" when the
   last id is an EOS id, "stop" when vLLM stopped on a stop string/id, else "length".
3. Log-probs. vLLM 0.32 offers ``logprobs_mode`` = raw_logprobs (log_softmax of the model's
   logits, before temperature, penalties and top-k/top-p) or processed_logprobs (after
   temperature AND after top-k/top-p: truncated and renormalised). Neither is r1lab's
   quantity, log softmax(logits / T) before truncation, when T ≠ 1 and top-p/top-k are on. So
   the engine uses raw_logprobs, asks vLLM for temperature 1, and sets the model's logits
   scale (``model.logits_processor.scale``, applied in ``compute_logits``) to 1/T for the
   call: vLLM then samples from top-p/top-k of softmax(logits/T), exactly the distribution of
   temperature T, and its raw log-probs are log softmax(logits/T) untruncated. Greedy (T = 0)
   keeps scale 1 and vLLM's temperature 0 (log-probs of softmax(logits), as ``HFEngine``);
   vLLM refuses n > 1 greedy, so one greedy sample per prompt is drawn and repeated n times.
   Entropies are not returned (``None``): vLLM would have to send the full distribution.
4. ``sync_weights(model)``: the training model's ``state_dict`` goes through vLLM's in-place
   reload (worker ``reload_weights``, checkpoint format: vLLM's own name mapping and qkv /
   gate-up fusing), which re-runs each layer's post-load processing. On CPU that processing
   matters: vLLM packs each linear weight for oneDNN / its GEMM kernels and drops the plain
   ``weight`` (an empty tensor), so a bare ``model.load_weights`` would not reach the packed
   copies. The prefix cache is reset afterwards (its KV was computed by the old weights).
   A peft model must be merged first (the names must be the base model's).

vLLM is imported inside the class: this module imports without it (``scripts/vllm_env.sh``
builds ``.venv-vllm`` with vllm-cpu; tests/test_vllm_engine.py skips elsewhere).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import torch

from r1lab.engine.rollout import RolloutOutput, Sample, SamplingParams, _cut_after_stop

_M64 = (1 << 64) - 1


class VLLMEngine:
    """``Engine`` on a colocated ``vllm.LLM`` (see module docstring)."""

    def __init__(self, model, tokenizer, weights_dir: str | os.PathLike, *, max_model_len: int | None = None,
                 seed: int = 0, kv_cache_gib: int = 1, enforce_eager: bool | None = None, **llm_kwargs):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in-process: sync_weights needs the worker here
        device = next(model.parameters()).device
        if device.type == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        import vllm

        from r1lab.models import quiet_hf, save_tokenizer

        self.tokenizer = tokenizer
        path = Path(weights_dir)
        path.mkdir(parents=True, exist_ok=True)
        with quiet_hf():
            model.save_pretrained(path, safe_serialization=True)
        save_tokenizer(tokenizer, path)
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        kwargs = dict(model=str(path), dtype=dtype, seed=seed, logprobs_mode="raw_logprobs",
                      enforce_eager=device.type == "cpu" if enforce_eager is None else enforce_eager)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if device.type == "cuda":
            llm_kwargs.setdefault("gpu_memory_utilization", 0.3)  # colocated: the trainer keeps the rest
        set_num_threads, rng = torch.set_num_threads, _rng_state()
        try:
            self.llm = vllm.LLM(**kwargs, **llm_kwargs)
        finally:
            torch.set_num_threads = set_num_threads  # the CPU worker's no-op: no binding happened in-process
            _set_rng_state(rng)  # vLLM seeds random / numpy / torch globally at start-up; the trainer's stay
        self._vllm = vllm
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(_quiet_rotary)
        self.eos_ids = _eos_ids(model, tokenizer)
        self.added = set(getattr(tokenizer, "get_added_vocab", dict)().values())

    def _set_scale(self, scale: float) -> None:
        def set_scale(m):
            if not hasattr(m, "logits_processor"):
                raise NotImplementedError(f"{type(m).__name__} has no logits_processor: no temperature scaling")
            m.logits_processor.scale = scale

        self.llm.apply_model(set_scale)

    def _sampling_kwargs(self, params: SamplingParams) -> dict:
        tok = self.tokenizer
        stop_enc = [tok(s, add_special_tokens=False)["input_ids"] for s in params.stop]
        single = all(len(e) == 1 and e[0] in self.added for e in stop_enc)
        greedy = params.temperature <= 0
        kw = dict(n=1, temperature=0.0 if greedy else 1.0, top_p=params.top_p, top_k=params.top_k or 0,
                  max_tokens=params.max_new_tokens, logprobs=0, skip_special_tokens=False,
                  stop_token_ids=sorted(self.eos_ids | ({e[0] for e in stop_enc} if single else set())))
        if single:
            kw["detokenize"] = False
        else:
            kw.update(stop=list(params.stop), include_stop_str_in_output=True)
        return kw

    def generate(self, prompts: list[str], params: SamplingParams, n: int = 1) -> RolloutOutput:
        if n < 1:
            raise ValueError("n must be >= 1")
        tok = self.tokenizer
        enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**31, (1,)).item())
        greedy = params.temperature <= 0
        per = 1 if greedy else n  # requests per prompt (vLLM refuses n > 1 greedy: one, repeated)
        kw = self._sampling_kwargs(params)
        first = getattr(params, "stream_offset", 0)  # a data-parallel rank's first sample index
        sps = [self._vllm.SamplingParams(**kw, seed=_sample_seed(seed, first + i * n + j))
               for i in range(len(prompts)) for j in range(per)]
        self._set_scale(1.0 if greedy else 1.0 / params.temperature)
        try:
            outs = self.llm.generate([{"prompt_token_ids": e} for e in enc for _ in range(per)], sps, use_tqdm=False)
        finally:
            self._set_scale(1.0)
        samples: list[Sample] = []
        for r, out in enumerate(outs):
            ids_p = enc[r // per]
            for c in out.outputs:
                ids = list(c.token_ids)
                logprobs = [lp[t].logprob for lp, t in zip(c.logprobs, ids)]
                if ids and ids[-1] in self.eos_ids:
                    why = "eos"
                elif c.stop_reason is not None:
                    why = "stop"
                else:
                    why = "length"
                text = tok.decode(ids[:-1] if why == "eos" else ids, skip_special_tokens=False)
                if why == "stop":
                    text = _cut_after_stop(text, params.stop)
                for _ in range(n if greedy else 1):
                    samples.append(Sample(list(ids_p), list(ids), list(logprobs), text, why, None))
        return RolloutOutput(samples=samples, n=n)

    @torch.no_grad()
    def sync_weights(self, model) -> None:
        """Push ``model``'s current weights into vLLM's copy in place, then reset the prefix cache."""
        weights = ((name, t.detach()) for name, t in model.state_dict().items())
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()


def _sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of a call with ``seed`` (two rounds of splitmix64): unlike
    vLLM's own seed + j for the j-th of n, streams of nearby seeds or indices do not overlap."""
    x = seed & _M64
    for v in (0, index):
        x = ((x ^ v) + 0x9E3779B97F4A7C15) & _M64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
        x ^= x >> 31
    return x >> 1


def _rng_state():
    import numpy as np

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _set_rng_state(state) -> None:
    import numpy as np

    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])
    if state[3] is not None:
        torch.cuda.set_rng_state_all(state[3])


def _quiet_rotary(record: logging.LogRecord) -> bool:
    """Drop reload's "RotaryEmbedding: Failed to load weights" (every sync): its cos/sin cache is
    computed, never in a checkpoint, and reload rightly keeps the existing one."""
    return not (record.msg == "%s: Failed to load weights" and "Rotary" in str(record.args))


def _eos_ids(model, tokenizer) -> set[int]:
    """EOS ids as ``HFEngine`` takes them: the tokenizer's, plus the model's generation_config's."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, (list, tuple)):
        ids.update(int(i) for i in gen_eos)
    return ids
