"""r1lab.moe: the V3 router by hand and against a plain loop, the bias update, the MoE layer's two dispatch
paths against a per-token loop (values and gradients, float64), fixed routing, the balance loss, and
transformers' DeepseekV3 router / MoE as an independent reference."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from r1lab.moe import MoE, balance_loss, copy_from_transformers, route, update_bias

ROOT = Path(__file__).resolve().parents[1]


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def ref_route(logits, bias, k, n_group=1, topk_group=1, normalize=True, scale=1.0):
    """Plain-Python router, one token at a time: (weights, experts) as nested lists."""
    weights, experts = [], []
    b = [float(v) for v in bias]
    for row in logits.tolist():
        s = [sig(v) for v in row]
        c = [si + bi for si, bi in zip(s, b)]
        e = len(s)
        per = e // n_group
        allowed = list(range(e))
        if n_group > 1:
            score = [sum(sorted(c[g * per:(g + 1) * per], reverse=True)[:2]) for g in range(n_group)]
            keep = sorted(range(n_group), key=lambda g: -score[g])[:topk_group]
            allowed = [i for g in keep for i in range(g * per, (g + 1) * per)]
        chosen = sorted(allowed, key=lambda i: -c[i])[:k]
        w = [s[i] for i in chosen]
        if normalize:
            total = sum(w) + 1e-20
            w = [v / total for v in w]
        weights.append([v * scale for v in w])
        experts.append(chosen)
    return weights, experts


# ---------------------------------------------------------------- route


def test_route_hand_numbers_bias_selects_but_never_weighs():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0]], dtype=torch.float64)
    s = [sig(v) for v in (0.0, 1.0, -1.0, 2.0)]  # 0.5, 0.731, 0.269, 0.881
    w, e = route(logits, torch.zeros(4), 2)
    assert e.tolist() == [[3, 1]]
    assert w[0].tolist() == pytest.approx([s[3] / (s[3] + s[1]), s[1] / (s[3] + s[1])], abs=1e-12)

    w, e = route(logits, torch.tensor([0.0, 0.0, 1.0, 0.0]), 2)  # s + b = .5 .731 1.269 .881
    assert e.tolist() == [[2, 3]]
    assert w[0].tolist() == pytest.approx([s[2] / (s[2] + s[3]), s[3] / (s[2] + s[3])], abs=1e-12)  # s, not s+b

    w, e = route(logits, torch.zeros(4), 2, normalize=False)
    assert w[0].tolist() == pytest.approx([s[3], s[1]], abs=1e-12)
    w, e = route(logits, torch.zeros(4), 2, normalize=False, scale=2.5)
    assert w[0].tolist() == pytest.approx([2.5 * s[3], 2.5 * s[1]], abs=1e-12)
    w, e = route(logits, torch.zeros(4), 2, scale=2.5)
    assert w.sum().item() == pytest.approx(2.5, abs=1e-12)


def test_route_group_limited_selection_changes_the_choice():
    # groups {0, 1}: s .9 .1 (score 1.0); {2, 3}: s .6 .5 (score 1.1) -> only group 2 stays
    logits = torch.tensor([[logit(0.9), logit(0.1), logit(0.6), logit(0.5)]], dtype=torch.float64)
    _, e = route(logits, torch.zeros(4), 2)
    assert e.tolist() == [[0, 2]]
    w, e = route(logits, torch.zeros(4), 2, n_group=2, topk_group=1)
    assert e.tolist() == [[2, 3]]
    assert w[0].tolist() == pytest.approx([0.6 / 1.1, 0.5 / 1.1], abs=1e-12)
    _, e = route(logits, torch.zeros(4), 2, n_group=2, topk_group=2)  # both groups kept = no limit
    assert e.tolist() == [[0, 2]]
    _, e = route(logits, torch.tensor([0.0, 0.3, 0.0, 0.0]), 2, n_group=2, topk_group=1)  # bias moves the group
    assert e.tolist() == [[0, 1]]


@pytest.mark.parametrize("e,k,n_group,topk_group,normalize,scale", [
    (8, 2, 1, 1, True, 1.0), (8, 3, 4, 2, True, 2.5), (12, 4, 3, 2, False, 1.0), (6, 1, 3, 1, True, 16.0),
])
def test_route_matches_plain_python_reference(e, k, n_group, topk_group, normalize, scale):
    g = torch.Generator().manual_seed(e * 10 + k)
    logits = torch.randn(50, e, generator=g, dtype=torch.float64)
    bias = 0.2 * torch.randn(e, generator=g, dtype=torch.float64)
    w, idx = route(logits, bias, k, n_group=n_group, topk_group=topk_group, normalize=normalize, scale=scale)
    rw, ridx = ref_route(logits, bias, k, n_group, topk_group, normalize, scale)
    assert idx.tolist() == ridx
    assert torch.allclose(w, torch.tensor(rw, dtype=torch.float64), atol=1e-12)


def test_route_rejects_impossible_groups():
    with pytest.raises(ValueError, match="n_group"):
        route(torch.zeros(2, 6), torch.zeros(6), 2, n_group=4)
    with pytest.raises(ValueError, match="top_k"):
        route(torch.zeros(2, 8), torch.zeros(8), 3, n_group=4, topk_group=1)


# ---------------------------------------------------------------- update_bias


def test_update_bias_hand_numbers():
    out = update_bias(torch.zeros(4), torch.tensor([3, 1, 2, 2]), 0.1)  # mean 2
    assert out.tolist() == pytest.approx([-0.1, 0.1, 0.0, 0.0])
    assert out.dtype == torch.float32
    b = torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=torch.float64)
    out = update_bias(b, torch.tensor([4.0, 0.0, 0.0, 0.0]), 0.01)  # mean 1
    assert out.tolist() == pytest.approx([0.49, 0.01, 0.01, 0.01])
    assert b.tolist() == [0.5, 0.0, 0.0, 0.0]  # a new tensor


# ---------------------------------------------------------------- MoE


def make(dispatch="sort", **kw):
    torch.manual_seed(0)
    args = dict(dim=5, hidden=3, n_routed=6, top_k=2, n_shared=2, n_group=3, topk_group=2, scale=2.5)
    args.update(kw)
    m = MoE(**args, dispatch=dispatch).double()
    m.bias.copy_(0.1 * torch.randn(m.n_routed, dtype=torch.float64))
    return m


def ref_forward(m: MoE, x, chosen=None):
    """shared(x_t) + Σ_k g_k expert_k(x_t), one token and one expert at a time (routed by ref_route
    unless ``chosen`` experts are given)."""
    logits = x @ m.router.weight.T
    s = logits.sigmoid()
    if chosen is None:
        _, chosen = ref_route(logits.detach(), m.bias.tolist(), m.top_k, m.n_group, m.topk_group, m.normalize)
    out = []
    for t in range(x.shape[0]):
        y = m.shared(x[t]) if m.shared is not None else torch.zeros_like(x[t])
        w = s[t, chosen[t]]
        if m.normalize:
            w = w / (w.sum() + 1e-20)
        for j, e in enumerate(chosen[t]):
            gate, up = (x[t] @ m.w_gate_up[e]).chunk(2)
            y = y + m.scale * w[j] * ((F.silu(gate) * up) @ m.w_down[e])
        out.append(y)
    return torch.stack(out), chosen


def grads(m, x, y, r):
    m.zero_grad()
    x.grad = None
    (y * r).sum().backward()
    return [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("kw", [{}, {"normalize": False, "n_shared": 0, "n_group": 1, "topk_group": 1},
                                {"n_routed": 12, "top_k": 3, "n_group": 4, "topk_group": 2}])
def test_both_dispatch_paths_equal_a_per_token_loop_in_values_and_gradients(kw):
    x = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    r = torch.randn(9, 5, dtype=torch.float64)
    ref = make(**kw)
    want, chosen = ref_forward(ref, x)
    want_g = grads(ref, x, want, r)
    for dispatch in ("sort", "dense", "auto"):
        m = make(dispatch, **kw)
        y = m(x)
        assert m.last_experts.tolist() == chosen
        assert torch.allclose(y, want, atol=1e-12), dispatch
        got_g = grads(m, x, y, r)
        assert len(got_g) == len(want_g)
        for a, b in zip(got_g, want_g):
            assert torch.allclose(a, b, atol=1e-12), dispatch
    assert got_g[1].abs().sum() > 0  # router.weight: trained through the gates


@pytest.mark.parametrize("n", [6, 200])  # 6 tokens: most of the 16 experts get none
def test_grouped_gemm_equals_the_expert_loop_and_dense_in_fp32(n):
    torch.manual_seed(0)
    m = MoE(8, 16, 16, 2, n_shared=1, n_group=4, topk_group=2, scale=2.5, dispatch="sort")
    x = torch.randn(n, 8, requires_grad=True)
    r = torch.randn(n, 8)
    if hasattr(F, "grouped_mm"):
        assert m.grouped_ok(x) and not m.grouped_ok(x.double())
        assert not MoE(8, 16, 4, 2).dense_for(x)  # "auto" takes the grouped GEMM even for E 4
        assert not MoE(5, 16, 4, 2).grouped_ok(torch.randn(3, 5))  # 20-byte rows
    outs = {}
    for name in ("grouped", "loop", "dense"):
        m.use_grouped_mm = name == "grouped"
        m.dispatch = "dense" if name == "dense" else "sort"
        y = m(x)
        outs[name] = [y.detach()] + grads(m, x, y, r)
    for name in ("loop", "dense"):
        for a, b in zip(outs["grouped"], outs[name]):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), name


def test_forward_keeps_the_shape_and_records_statistics():
    m = make("dense")
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    y = m(x)
    assert y.shape == x.shape
    assert m.last_experts.shape == (14, 2)
    assert m.last_load.sum().item() == 14 * 2
    assert m.last_load.tolist() == torch.bincount(m.last_experts.flatten(), minlength=6).tolist()
    assert m.last_aux_loss.item() == 0.0
    names = [n for n, _ in m.named_parameters()]
    assert "bias" not in names and not any(n.endswith("bias") for n in names)
    assert "bias" in m.state_dict() and "load_accum" not in m.state_dict()
    with pytest.raises(ValueError, match="dispatch"):
        MoE(4, 4, 4, 2, dispatch="scatter")


def test_bf16_cast_keeps_the_bias_fp32_and_runs():
    m = MoE(8, 8, 4, 2, dispatch="sort").to(torch.bfloat16)
    assert m.bias.dtype == torch.float32 and m.w_gate_up.dtype == torch.bfloat16
    assert m.load_accum.dtype == torch.long
    y = m(torch.randn(2, 3, 8, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and y.shape == (2, 3, 8)
    m.update_bias(1e-3)
    assert m.bias.abs().max().item() == pytest.approx(1e-3)
    assert MoE(8, 8, 4, 2).double().bias.dtype == torch.float64


def test_auto_dispatch_prefers_grouped_sort_then_dense_for_small_e_and_few_tokens():
    f32, f64 = torch.zeros(64, 4), torch.zeros(64, 4, dtype=torch.float64)
    big = torch.zeros(4096, 4, dtype=torch.float64)
    assert not MoE(4, 4, 8, 2).dense_for(f32) or not hasattr(F, "grouped_mm")  # grouped GEMM applies
    m = MoE(4, 4, 8, 2).double()  # fp64: the per-expert loop, which dense beats for few tokens
    assert m.dense_for(f64) and not m.dense_for(big)
    assert not MoE(4, 4, 32, 2).double().dense_for(f64)
    assert MoE(4, 4, 32, 2, dispatch="dense").dense_for(f32)
    assert not MoE(4, 4, 4, 2, dispatch="sort").dense_for(f64)


def test_fixed_experts_reproduce_the_free_forward_and_take_current_gates():
    m = make("sort")
    x = torch.randn(10, 5, dtype=torch.float64)
    free = m(x)
    chosen = m.last_experts.clone()
    with torch.no_grad():
        m.bias += torch.tensor([3.0, 0, 0, 0, 0, -3.0], dtype=torch.float64)  # would change the choice ...
    assert not torch.equal(route(x @ m.router.weight.T, m.bias, 2, n_group=3, topk_group=2)[1], chosen)
    assert torch.allclose(m(x, experts=chosen), free, atol=1e-12)  # ... but the bias never weighs
    assert torch.equal(m.last_experts, chosen)
    with torch.no_grad():
        m.router.weight.mul_(2.0)  # new affinities: same experts, new gates
    want, _ = ref_forward(m, x, chosen.tolist())
    assert torch.allclose(m(x, experts=chosen), want, atol=1e-12)
    assert not torch.allclose(want, free)
    with pytest.raises(ValueError, match="experts"):
        m(x, experts=chosen[:, :1])


def test_balance_loss_is_alpha_for_uniform_affinities():
    # s = 0.5 everywhere -> P_i = 1/E, Σ_i f_i = E whatever is chosen -> L = α
    m = MoE(4, 4, 8, 2, balance_alpha=0.01)
    with torch.no_grad():
        m.router.weight.zero_()
        m.bias.copy_(torch.arange(8.0) / 100)  # breaks the ties
    m(torch.randn(3, 5, 4))
    assert m.last_aux_loss.item() == pytest.approx(0.01)
    assert m.last_experts.tolist() == [[7, 6]] * 15


def test_balance_loss_matches_a_per_sequence_loop_and_has_gradient():
    alpha, b, t, e, k = 1e-2, 3, 5, 6, 2
    m = make("sort", balance_alpha=alpha)
    x = torch.randn(b, t, 5, dtype=torch.float64)
    m(x)
    s = (x.reshape(-1, 5) @ m.router.weight.T).sigmoid().detach()
    chosen = m.last_experts.tolist()
    total = 0.0
    for seq in range(b):
        rows = range(seq * t, (seq + 1) * t)
        for i in range(e):
            f = e / (k * t) * sum(i in chosen[r] for r in rows)
            p = sum(s[r, i].item() / s[r].sum().item() for r in rows) / t
            total += f * p
    assert m.last_aux_loss.item() == pytest.approx(alpha * total / b, rel=1e-12)
    m.last_aux_loss.backward()
    assert m.router.weight.grad.abs().sum() > 0
    flat = x.reshape(-1, 5)
    m(flat, seq_len=t)  # 2-D with seq_len: the same sequences
    assert m.last_aux_loss.item() == pytest.approx(alpha * total / b, rel=1e-12)
    m(flat)  # 2-D without: one sequence of 15
    one = balance_loss(s, m.last_experts, b * t, alpha)
    assert m.last_aux_loss.item() == pytest.approx(one.item(), rel=1e-12)
    with pytest.raises(ValueError, match="sequences"):
        m(flat, seq_len=4)


def test_load_accumulates_in_training_mode_and_update_bias_balances():
    torch.manual_seed(1)
    m = MoE(8, 8, 4, 1, n_shared=0)
    x = torch.randn(64, 8) + 1.0
    with torch.no_grad():
        m.router.weight[0] = 0.5  # expert 0 takes nearly every token
        m.train()
        m(x)
        first = m.last_load.clone()
        m(x)
        assert torch.equal(m.load_accum.float(), 2 * first)
        used = m.update_bias(0.05)
        assert used.dtype == torch.float32 and torch.equal(used, 2 * first) and m.load_accum.sum() == 0
        assert m.bias[0] < 0 and (m.bias[first < first.mean()] > 0).all()
        m.eval()
        m(x)
        assert m.load_accum.sum() == 0  # eval forwards do not count ...
        m.update_bias(0.0)  # ... but update_bias falls back to last_load
        m.train()
        late = torch.zeros(4)
        for step in range(100):
            m(x)
            late += m.last_load if step >= 80 else 0
            m.update_bias(0.05)
    assert first.max() > 50  # started with one expert taking (nearly) all 64 tokens
    assert ((late / 20 - 16).abs() < 6).all(), late / 20  # ends near 16 each (the sign update jitters)


# ---------------------------------------------------------------- transformers' DeepseekV3 as a reference


def hf_config(e, k, n_group=1, topk_group=1, scale=1.0, d=8, h=4, shared=1):
    cfg = pytest.importorskip("transformers").DeepseekV3Config(
        hidden_size=d, moe_intermediate_size=h, n_routed_experts=e, num_experts_per_tok=k, n_shared_experts=shared,
        n_group=n_group, topk_group=topk_group, routed_scaling_factor=scale, norm_topk_prob=True)
    cfg._experts_implementation = "eager"
    return cfg


def test_route_matches_transformers_router():
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    torch.manual_seed(0)
    router = DeepseekV3TopkRouter(hf_config(16, 3, n_group=4, topk_group=2, scale=2.5))
    with torch.no_grad():
        router.weight.normal_()
        router.e_score_correction_bias.normal_(0, 0.1)
    x = torch.randn(40, 8)
    logits, w, idx = router(x)
    ours_w, ours_idx = route(logits, router.e_score_correction_bias, 3, n_group=4, topk_group=2, scale=2.5)
    order = idx.argsort(dim=1)  # transformers does not sort the chosen experts
    assert torch.equal(ours_idx.sort(dim=1).values, idx.gather(1, order))
    assert torch.allclose(ours_w.gather(1, ours_idx.argsort(dim=1)), w.gather(1, order), atol=1e-6)


def test_moe_matches_transformers_deepseek_v3_moe():
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    torch.manual_seed(0)
    hf = DeepseekV3MoE(hf_config(8, 2, n_group=2, topk_group=1, scale=2.5, shared=2))
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.3)
        hf.gate.e_score_correction_bias.normal_(0, 0.1)
    m = copy_from_transformers(MoE(8, 4, 8, 2, n_shared=2, n_group=2, topk_group=1, scale=2.5), hf)
    x = torch.randn(2, 6, 8, requires_grad=True)
    want = hf(x)
    (gx_want,) = torch.autograd.grad(want.square().sum(), x)
    for dispatch in ("sort", "dense"):
        m.dispatch = dispatch
        y = m(x)
        assert torch.allclose(y, want, atol=1e-5), dispatch
        (gx,) = torch.autograd.grad(y.square().sum(), x)
        assert torch.allclose(gx, gx_want, atol=1e-4), dispatch


# ---------------------------------------------------------------- the benchmark


def test_bench_variants_run_and_agree(monkeypatch):
    """bench/moe.py's measuring block in-process at smoke sizes (a subprocess would spend ~6 s importing)."""
    pytest.importorskip("transformers")
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_moe", ROOT / "bench" / "moe.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.block(bench.parse_args(["--smoke"]), 12, "cpu", torch.float32)
    names = {r["variant"] for r in rows}
    assert {"r1lab-auto", "r1lab-sort", "r1lab-dense", "loop", "hf-eager", "hf-grouped_mm"} <= names
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert all(r["max_diff"] < 1e-5 for r in rows if r["max_diff"] is not None)
