"""Fast paths of the rollout against plain references: the lean decode step and the
preallocated cache against the model's own full forward; inverse-CDF sampling against the
distribution it samples; the engine's two decoders give the same samples."""

from __future__ import annotations

import pytest
import torch

from r1lab.engine.fastdecode import FastDecoder, supported
from r1lab.engine.kvcache import HFDecoder
from r1lab.engine.rollout import HFEngine, SamplingParams, sample_inverse_cdf, stream_uniforms
from r1lab.models import load_model, load_tokenizer


def _tiny(model_type: str, **extra):
    import transformers

    common = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, head_dim=8)
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config,
           "mistral": transformers.MistralConfig}[model_type]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cls(**{**common, **extra}), attn_implementation="sdpa")
    return model.eval()


FAMILIES = {
    "llama": {},
    "qwen2": {},
    "qwen3": {},  # q_norm / k_norm
    "llama_mha_rope_scaled": {"num_key_value_heads": 4, "rope_scaling": {"rope_type": "linear", "factor": 2.0}},
    "mistral": {"sliding_window": None},
}


def _reference_logits(model, prompts: list[list[int]], continuations: list[list[int]]) -> torch.Tensor:
    """Last-position logits of the full forward of each prompt + continuation, one row at a time."""
    rows = []
    with torch.no_grad():
        for p, c in zip(prompts, continuations):
            rows.append(model(torch.tensor([p + c])).logits[0, -1].float())
    return torch.stack(rows)


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("decoder_cls", [FastDecoder, HFDecoder])
def test_decoders_match_full_forward(name, decoder_cls):
    model = _tiny(name.split("_")[0], **FAMILIES[name])
    assert supported(model)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, 61, (k,), generator=g).tolist() for k in (5, 2, 7)]  # left-padded to 7
    width, n, steps = 7, 2, 6
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    dec = decoder_cls(model)
    dec.grow_by = 2  # FastDecoder: KV buffers regrow mid-sequence, before and after row drops
    with torch.no_grad():
        logits = dec.prefill(ids, mask, n, capacity=width + steps)
        rows = [i // n for i in range(len(prompts) * n)]  # prompt of each live row
        conts = [[] for _ in rows]
        ref = _reference_logits(model, [prompts[r] for r in rows], conts)
        assert torch.allclose(logits, ref, atol=1e-5)
        pos = torch.tensor([len(prompts[r]) for r in rows])
        for step in range(steps - 1):
            tokens = torch.randint(2, 61, (len(rows),), generator=g)
            if step in (1, 3):  # drop some rows: swap-remove (fast) or compaction (HF)
                alive = torch.ones(len(rows), dtype=torch.bool)
                alive[[0, len(rows) // 2]] = False
                order = dec.keep(alive).tolist()
                rows, conts = [rows[o] for o in order], [conts[o] for o in order]
                tokens, pos = tokens[order], pos[order]
            conts = [c + [t] for c, t in zip(conts, tokens.tolist())]
            logits = dec.step(tokens, pos)
            pos = pos + 1
            ref = _reference_logits(model, [prompts[r] for r in rows], conts)
            assert torch.allclose(logits, ref, atol=1e-5), (name, step, (logits - ref).abs().max())


def test_supported_rejects_other_architectures():
    import transformers

    moe = transformers.Qwen2MoeConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, moe_intermediate_size=16,
                                      num_experts=4, num_experts_per_tok=2, shared_expert_intermediate_size=16)
    assert not supported(transformers.AutoModelForCausalLM.from_config(moe))
    assert not supported(_tiny("mistral", sliding_window=4))  # a window the lean step does not apply
    with pytest.raises(ValueError, match="fast decoding"):
        HFEngine(transformers.AutoModelForCausalLM.from_config(moe), tokenizer=None, fast=True)


def test_engine_fast_and_plain_decoders_sample_the_same(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    prompts = ["Use 4 8 6 to make 32.\n<think>", "Compute 3+4*2.\n<think>"]
    params = SamplingParams(max_new_tokens=40, temperature=1.0, seed=11)
    fast = HFEngine(model, tok, fast=True).generate(prompts, params, n=4)
    plain = HFEngine(model, tok, fast=False).generate(prompts, params, n=4)
    for a, b in zip(fast.samples, plain.samples):
        assert a.completion_ids == b.completion_ids and a.finish_reason == b.finish_reason
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)


def test_inverse_cdf_frequencies_match_probabilities():
    probs = torch.tensor([[0.5, 0.0, 0.2, 0.3], [0.0, 0.0, 0.0, 2.0], [1.0, 3.0, 0.0, 0.0]])  # unnormalised ok
    draws = 40_000
    counts = torch.zeros_like(probs)
    for step in range(4):  # the per-sample streams: 30k sample indices × 4 decode steps
        rows = probs.repeat(draws // 4, 1)
        idx = sample_inverse_cdf(rows, stream_uniforms(0, torch.arange(len(rows)), step)).view(-1, 3)
        for row in range(3):
            counts[row] += torch.bincount(idx[:, row], minlength=4).float()
    freq = counts / draws
    expected = probs / probs.sum(-1, keepdim=True)
    assert torch.all(counts[expected == 0] == 0)  # a zero-probability token is never drawn
    # 4.5 standard errors of a binomial proportion with p ≤ 0.75 over 40k draws ≈ 0.01
    assert torch.allclose(freq, expected, atol=0.01), freq


def test_inverse_cdf_never_picks_zero_mass_when_u_is_at_the_top():
    # u drawn at the very top of [0, 1): u·Σp can round up to Σp; trailing zero-mass tokens
    # must still never be returned (the guard clamps u strictly below the CDF's last value)
    probs = torch.tensor([[1e-8, 1.0, 0.0, 0.0], [0.3, 0.0, 0.7, 0.0]])
    for top in (1.0 - 2**-24, 1.0):
        assert sample_inverse_cdf(probs, torch.full((2,), top)).tolist() == [1, 2]


def test_stream_uniforms_are_uniform_and_keyed():
    idx = torch.arange(200_000)
    u = stream_uniforms(5, idx, 3)
    assert u.dtype == torch.float64 and float(u.min()) >= 0.0 and float(u.max()) < 1.0
    # 10 bins of 20k draws: a standard error of ~0.00067 per bin share
    share = torch.bincount((u * 10).long(), minlength=10).float() / len(u)
    assert torch.allclose(share, torch.full((10,), 0.1), atol=0.004), share
    assert abs(float(u.mean()) - 0.5) < 0.003
    # a pure function of (seed, index, step); any one of them changes the draw
    assert torch.equal(stream_uniforms(5, idx[:7], 3), u[:7])
    assert torch.equal(stream_uniforms(5, idx[[6, 2]], 3), u[[6, 2]])
    for other in (stream_uniforms(6, idx, 3), stream_uniforms(5, idx + 1, 3), stream_uniforms(5, idx, 4),
                  stream_uniforms(5 + 2**32, idx, 3)):
        assert float((other == u).float().mean()) < 0.001
    # neighbouring indices and steps are not correlated
    a, b = u[:-1] - 0.5, u[1:] - 0.5
    assert abs(float((a * b).mean()) / float((a * a).mean())) < 0.01
    c = stream_uniforms(5, idx, 4) - 0.5
    assert abs(float(((u - 0.5) * c).mean()) / float((c * c).mean())) < 0.01


def test_bf16_model_matches_within_bf16_rounding():
    # the GPU dtype path on CPU: bf16 weights, norms through the model's own modules, fp32 softmax
    model = _tiny("qwen2").to(torch.bfloat16)
    prompts = [[5, 9, 11, 3], [7, 8]]
    ids = torch.tensor([[5, 9, 11, 3], [0, 0, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    dec = FastDecoder(model)
    with torch.no_grad():
        dec.prefill(ids, mask, 1, capacity=8)
        logits = dec.step(torch.tensor([13, 14]), torch.tensor([4, 2]))
        ref = _reference_logits(model, prompts, [[13], [14]])
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, ref, atol=0.05, rtol=0.05), (logits - ref).abs().max()
