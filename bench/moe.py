"""MoE layer speed: r1lab.moe.MoE (auto / sort / dense dispatch) vs a per-token loop vs transformers' DeepseekV3MoE.

    python bench/moe.py                      # N 4096 tokens, D 64, H 128, E 8 and 32, K 2, 1 shared expert
    python bench/moe.py --smoke              # a few seconds: tiny sizes, one repeat

What it measures: tokens per second of one forward + backward of the layer alone (loss = Σ y·r with a
fixed random r; gradients w.r.t. the input and every parameter, parameter grads set to None before
each pass), at equal shapes and equal weights. Median of ``--repeats`` timed passes per variant,
variants alternating, one untimed warm-up pass each. Variants:
  r1lab-auto   ``MoE(dispatch="auto")``: sort where torch's grouped GEMM applies, else dense for small E
               and few tokens (``MoE.dense_for``; r1lab.moe.DENSE_MAX_EXPERTS)
  r1lab-sort   token slots sorted by expert, each expert on its contiguous slice by torch's grouped GEMM
               (``F.grouped_mm``, where ``MoE.grouped_ok``), slots back in order, summed over K
  r1lab-sort-loop  the same with ``use_grouped_mm = False``: a Python loop of one matmul pair per expert
  r1lab-dense  every expert on every token, gated by an (N, E) matrix zero off the chosen experts
  loop         one token at a time, one chosen expert at a time (the tests' reference), on the first
               ``--loop-tokens`` tokens only (its cost is linear in tokens); tokens/s over those
  hf-eager     transformers' DeepseekV3MoE as DeepseekV3ForCausalLM builds it by default (a Python
               loop over the experts that received tokens)
  hf-batched_mm / hf-grouped_mm   the same module with ``config._experts_implementation`` set to
               transformers' vectorised alternatives (gathers every slot's expert weights / grouped GEMM)

Held equal: sizes (hidden_size = D, moe_intermediate_size = H, n_routed_experts = E,
num_experts_per_tok = K, n_shared_experts, n_group = topk_group = 1, routed_scaling_factor =
``--scale``, norm_topk_prob), weights (transformers' are drawn, then copied into r1lab's with
``r1lab.moe.copy_from_transformers``; outputs are checked to agree), input, dtype, threads. The
router runs in fp32 on both sides. The last line is the geometric mean over the ``--experts`` list
of r1lab-auto tokens/s over hf-eager tokens/s.
"""

from __future__ import annotations

import argparse
import math
import sys

import common
import torch
import torch.nn.functional as F

from r1lab.models import pick_device
from r1lab.moe import MoE, copy_from_transformers

HF_IMPLS = ("eager", "batched_mm", "grouped_mm")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4096, help="N tokens per forward")
    p.add_argument("--dim", type=int, default=64, help="D model width")
    p.add_argument("--hidden", type=int, default=128, help="H width of one expert")
    p.add_argument("--experts", default="8,32", help="comma list of E (routed experts), one block each")
    p.add_argument("--top-k", type=int, default=2, help="K experts per token")
    p.add_argument("--shared", type=int, default=1, help="shared experts")
    p.add_argument("--scale", type=float, default=2.5, help="routed scaling factor")
    p.add_argument("--loop-tokens", type=int, default=256, help="tokens the per-token loop runs on (0 = skip it)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per variant (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores of this process)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (seconds)")
    common.add_device_args(p, ceiling=False)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.smoke:
        args.tokens, args.dim, args.hidden, args.experts, args.loop_tokens, args.repeats = 64, 16, 16, "4,12", 8, 1
    return args


def hf_moe(args, e: int, impl: str, device, dtype):
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    cfg = DeepseekV3Config(hidden_size=args.dim, moe_intermediate_size=args.hidden, n_routed_experts=e,
                           num_experts_per_tok=args.top_k, n_shared_experts=args.shared, n_group=1, topk_group=1,
                           routed_scaling_factor=args.scale, norm_topk_prob=True)
    cfg._experts_implementation = impl
    return DeepseekV3MoE(cfg).to(device=device, dtype=dtype)


def loop_forward(m: MoE, x):
    """The reference: shared(x_t) + Σ_k g_k expert_k(x_t), token by token, expert by expert."""
    logits = F.linear(x.float(), m.router.weight.float())
    s = logits.sigmoid()
    chosen = (s.detach() + m.bias).topk(m.top_k, dim=-1).indices.tolist()
    out = []
    for t in range(x.shape[0]):
        w = s[t, chosen[t]]
        w = (m.scale * w / (w.sum() + 1e-20)).to(x.dtype)
        y = m.shared(x[t])
        for j, e in enumerate(chosen[t]):
            gate, up = (x[t] @ m.w_gate_up[e]).chunk(2)
            y = y + w[j] * ((F.silu(gate) * up) @ m.w_down[e])
        out.append(y)
    return torch.stack(out)


def block(args, e: int, device, dtype) -> list[dict]:
    """All variants at one E: a list of table rows."""
    torch.manual_seed(args.seed)
    hfs = {impl: hf_moe(args, e, impl, device, dtype) for impl in HF_IMPLS}
    with torch.no_grad():
        for p in hfs["eager"].parameters():
            p.normal_(0, args.dim**-0.5)
        for impl in HF_IMPLS[1:]:
            hfs[impl].load_state_dict(hfs["eager"].state_dict())
    mods = {}
    for name, d in (("auto", "auto"), ("sort", "sort"), ("sort-loop", "sort"), ("dense", "dense")):
        m = MoE(args.dim, args.hidden, e, args.top_k, args.shared, scale=args.scale, dispatch=d)
        mods[f"r1lab-{name}"] = copy_from_transformers(m, hfs["eager"]).to(device=device, dtype=dtype)
        m.use_grouped_mm = name != "sort-loop"
    mods.update({f"hf-{impl}": m for impl, m in hfs.items()})
    x = torch.randn(args.tokens, args.dim, device=device, dtype=dtype)
    r = torch.randn_like(x)
    n_loop = min(args.loop_tokens, args.tokens)
    runs = {name: (m, x, r) for name, m in mods.items()}
    if n_loop:
        runs["loop"] = (mods["r1lab-sort-loop"], x[:n_loop], r[:n_loop])

    def step(name):
        m, xi, ri = runs[name]
        for p in m.parameters():
            p.grad = None
        xi = xi.detach().requires_grad_(True)
        y = loop_forward(m, xi) if name == "loop" else m(xi)
        (y * ri).sum().backward()
        return y.detach()

    with torch.no_grad():
        want = mods["hf-eager"](x)
        diffs = {name: (mods[name](x) - want).abs().max().item() for name in mods}
        if n_loop:
            diffs["loop"] = (loop_forward(mods["r1lab-sort-loop"], x[:n_loop]) - want[:n_loop]).abs().max().item()
    for name in runs:  # warm-up
        step(name)
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name in runs:
            times[name].append(common.timed(lambda name=name: step(name), device)[0])
    rows = []
    for name in runs:
        sec = common.median(times[name])
        tokens = runs[name][1].shape[0]
        rows.append({"E": e, "variant": name, "tokens": tokens, "sec": sec, "all_sec": times[name],
                     "tokens_per_s": tokens / sec, "max_diff": diffs.get(name)})
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    common.quiet()
    common.warn_if_busy()
    threads = common.set_threads(args.threads)
    device = pick_device(args.device)
    dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
             "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    experts = [int(v) for v in args.experts.split(",")]
    rows, auto = [], []
    for e in experts:
        rows.extend(block(args, e, device, dtype))
        probe = torch.empty(args.tokens, args.dim, device=device, dtype=dtype)
        picks = MoE(args.dim, args.hidden, e, args.top_k).to(device=device, dtype=dtype).dense_for(probe)
        auto.append(f"E {e}: {'dense' if picks else 'sort'}")
    by = {(r["E"], r["variant"]): r for r in rows}
    for r in rows:
        r["vs_hf_eager"] = r["tokens_per_s"] / by[(r["E"], "hf-eager")]["tokens_per_s"]
    print(f"MoE forward+backward: N {args.tokens} tokens, D {args.dim}, H {args.hidden}, K {args.top_k}, "
          f"{args.shared} shared, E {args.experts} (auto picks {', '.join(auto)}); {device} "
          f"{str(dtype).replace('torch.', '')}, {threads} threads, median of {args.repeats}")
    common.print_table(rows, [("E", "E", "d"), ("variant", "variant", "s"), ("tokens", "tokens", "d"),
                              ("sec", "s/pass", ".4f"), ("tokens_per_s", "tokens/s", ".0f"),
                              ("vs_hf_eager", "vs hf-eager", ".2f"), ("max_diff", "|y - hf|max", ".1e")])
    ratios = [by[(e, "r1lab-auto")]["vs_hf_eager"] for e in experts]
    geo = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
    common.print_json("moe", {"args": vars(args), "machine": common.machine(), "rows": rows,
                              "ratio_auto_over_hf_eager": dict(zip(experts, ratios)), "geomean": geo})
    common.print_ratio(f"r1lab-auto/DeepseekV3MoE tokens_per_s (geomean over E={args.experts})", geo)


if __name__ == "__main__":
    sys.exit(main())
