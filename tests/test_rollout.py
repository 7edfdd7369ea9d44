"""The rollout engine: log-probs equal a full forward pass, stop strings, layout, filtering."""

from __future__ import annotations

import torch

from r1lab.engine.rollout import HFEngine, SamplingParams, filter_logits
from r1lab.models import load_model, load_tokenizer

PROMPTS = ["Use 4 8 6 to make 32.\n<think>", "Compute 3+4*2.\n<think>", "用 8 8 4 凑出 12。\n<think>"]


def _full_forward_logprobs(model, prompt_ids, completion_ids, temperature):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float() / temperature
    logp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], -1)
    return logp.gather(-1, torch.tensor(completion_ids)[:, None]).squeeze(-1)


def test_logprobs_match_full_forward(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    engine = HFEngine(model, tok)
    for temperature in (1.0, 0.7):
        out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=24, temperature=temperature, seed=3), n=4)
        assert len(out.samples) == len(PROMPTS) * 4
        for s in out.samples:
            ref = _full_forward_logprobs(model, s.prompt_ids, s.completion_ids, temperature)
            assert torch.allclose(ref, torch.tensor(s.logprobs), atol=1e-4), (ref, s.logprobs)


def test_layout_finish_reasons_and_seed(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    engine = HFEngine(model, tok, max_batch=5)  # forces chunking
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=7)
    a = engine.generate(PROMPTS, params, n=3)
    b = engine.generate(PROMPTS, params, n=3)
    assert [s.completion_ids for s in a.samples] == [s.completion_ids for s in b.samples]
    for i, s in enumerate(a.samples):
        assert s.prompt_ids == tok(PROMPTS[i // 3], add_special_tokens=False)["input_ids"]
        assert len(s.logprobs) == len(s.completion_ids) <= 16
        assert s.finish_reason in ("stop", "eos", "length")
        if s.finish_reason == "length":
            assert len(s.completion_ids) == 16
        if s.finish_reason == "stop":
            assert s.text.endswith("</answer>")
        if s.finish_reason == "eos":
            assert s.completion_ids[-1] == tok.eos_token_id


def test_samples_do_not_depend_on_batch_chunk_or_split(tiny_model_dir):
    # per-sample random streams: a sample is a function of (seed, its index) only, so chunking,
    # batch-mates and a split of the prompts across ranks (stream_offset) change nothing
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    params = SamplingParams(max_new_tokens=20, temperature=1.0, top_p=0.95, seed=4)
    whole = HFEngine(model, tok).generate(PROMPTS, params, n=3).samples
    chunked = HFEngine(model, tok, max_batch=3).generate(PROMPTS, params, n=3).samples
    first = HFEngine(model, tok).generate(PROMPTS[:1], params, n=3).samples
    rest = HFEngine(model, tok).generate(PROMPTS[1:], SamplingParams(**{**vars(params), "stream_offset": 3}), n=3).samples
    for other in (chunked, first + rest):
        assert [s.completion_ids for s in other] == [s.completion_ids for s in whole]
        for a, b in zip(other, whole):
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    assert len({tuple(s.completion_ids) for s in whole}) > 3  # the streams differ between samples


def test_stop_string_cuts_generation(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    engine = HFEngine(model, tok)
    # every sample must stop as soon as the text contains the stop string
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=20, temperature=1.0, stop=("=",), seed=1), n=4)
    for s in out.samples:
        if s.finish_reason == "stop":
            assert s.text.count("=") == 1 and s.text.endswith("=")
        else:
            assert "=" not in tok.decode(s.completion_ids[:-1])


def test_greedy_is_deterministic_and_matches_argmax(tiny_model_dir):
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    out = HFEngine(model, tok).generate(PROMPTS[:1], SamplingParams(max_new_tokens=6, temperature=0.0), n=2)
    assert out.samples[0].completion_ids == out.samples[1].completion_ids
    ids = list(out.samples[0].prompt_ids)
    for t in out.samples[0].completion_ids:
        with torch.no_grad():
            assert int(model(torch.tensor([ids])).logits[0, -1].argmax()) == t
        ids.append(t)


def test_filter_logits_against_reference():
    torch.manual_seed(0)
    logits = torch.randn(5, 11)
    for top_k, top_p in [(0, 0.9), (3, 1.0), (4, 0.5), (0, 1.0)]:
        got = filter_logits(logits.clone(), top_k, top_p)
        for row in range(5):
            order = torch.argsort(logits[row], descending=True).tolist()
            keep = set(order[:top_k]) if top_k else set(order)
            if top_p < 1.0:
                probs = torch.softmax(logits[row].masked_fill(
                    torch.tensor([i not in keep for i in range(11)]), float("-inf")), -1)
                mass, nucleus = 0.0, set()
                for i in order:
                    if i in keep and mass < top_p:
                        nucleus.add(i)
                        mass += float(probs[i])
                keep = nucleus
            expected = {i for i in range(11) if torch.isfinite(got[row, i])}
            assert expected == keep, (top_k, top_p, row)
