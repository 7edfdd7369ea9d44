"""Helpers shared by the benchmarks in bench/: matmul ceiling, FLOP estimates, timing, output.

Not a benchmark itself. The scripts import it as ``common`` (``python bench/X.py`` puts
bench/ first on sys.path).

FLOP model (documented once, used by every script; dense fp32 GEMMs count 2 FLOPs per
multiply-add):

    P_mm      = non-embedding parameters + lm_head parameters
                (the input embedding is a lookup, not a GEMM; a tied lm_head still is one)
    forward   = Σ_tokens [ 2·P_mm + 4·L·d·c ]      c = keys the token attends to (its position + 1)
    training  = 3 · forward  (backward ≈ 2 · forward)  = Σ_tokens [ 6·P_mm + 12·L·d·c ]

with L layers and d = heads · head_dim (the query width): per layer a token does 2·d·c FLOPs
for q·Kᵀ and 2·d·c for softmax·V. Norms, rotary, softmax, sampling and the optimizer are not
counted (they are memory-bound and small), so the achieved fractions are of *model* FLOPs
("MFU"), not of all arithmetic the hardware did.

The ceiling is the best FLOP/s of ``torch.matmul`` on fp32 square matrices measured in the
same process (same threads, same contention), best of several tries.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quiet() -> None:
    """No download/loading progress bars (they go to stderr and would interleave with the table)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except Exception:  # pragma: no cover
        pass


def default_threads() -> int:
    """Cores this process may use (affinity-aware), the torch thread count for the benchmarks."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (macOS)
        return os.cpu_count() or 1


def set_threads(n: int, reuse_memory: bool = True) -> int:
    """torch threads (0 = this process's cores) and, unless ``reuse_memory`` is False, glibc keeping
    freed memory for reuse (``r1lab.runtime``): process settings, the same for both compared sides."""
    from r1lab import runtime

    n = n or default_threads()
    runtime.configure(n, reuse_memory)
    return n


def add_device_args(p, ceiling: bool = True) -> None:
    """--device / --dtype (and --ceiling-size) as the benchmarks share them."""
    if ceiling:
        p.add_argument("--ceiling-size", type=int, default=0, help="side of the square matmul ceiling (0 = 1024 on "
                       "CPU, 8192 on GPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on CUDA) | float32 | bfloat16")


def ceiling_side(args, device: str) -> int:
    """--ceiling-size, or its default for the device: 8192 on a GPU, 1024 on a CPU."""
    return args.ceiling_size or (8192 if device.startswith("cuda") else 1024)


def sync(device: str | torch.device = "cpu") -> None:
    """Wait for queued GPU work, so that wall-clock times cover it (no-op on CPU)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def matmul_ceiling(size: int = 1024, tries: int = 7, dtype: torch.dtype = torch.float32,
                   device: str = "cpu") -> float:
    """Best FLOP/s of (size × size) @ (size × size) over ``tries`` timed calls (after a warm-up),
    in the model's dtype on the model's device (use size ≥ 4096 on a GPU)."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    out = torch.empty(size, size, dtype=dtype, device=device)
    torch.matmul(a, b, out=out)  # warm-up: thread pool, allocator, kernel selection
    sync(device)
    best = float("inf")
    for _ in range(tries):
        t = time.perf_counter()
        torch.matmul(a, b, out=out)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2.0 * size**3 / best


def model_dims(model) -> dict:
    """Sizes for the FLOP model: P_mm, layers, query width, parameter counts."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    embed = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings()
    head_n = head.weight.numel() if head is not None else 0
    layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return {
        "params": total,
        "embedding_params": embed,
        "lm_head_params": head_n,
        "matmul_params": total - embed + head_n,
        "layers": layers,
        "attn_width": heads * head_dim,
    }


def forward_flops(dims: dict, seq_spans: Iterable[tuple[int, int]]) -> float:
    """Forward FLOPs of tokens at positions [a, b) of their sequences, summed over spans.

    A token at position p (0-based) attends to c = p + 1 keys; Σ_{p=a}^{b-1} (p + 1) is done
    in closed form.
    """
    per_tok = 2.0 * dims["matmul_params"]
    attn = 4.0 * dims["layers"] * dims["attn_width"]
    total = 0.0
    for a, b in seq_spans:
        n = b - a
        if n <= 0:
            continue
        keys = (a + 1 + b) * n / 2.0  # Σ (p + 1) for p in [a, b)
        total += per_tok * n + attn * keys
    return total


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], object], device: str = "cpu") -> tuple[float, object]:
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """rows: dicts; columns: (key, header, format spec)."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([("" if r.get(k) is None else format(r[k], f)) for k, _, f in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for j, line in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def warn_if_busy() -> None:
    """Say so when other processes hold the cores: torch's thread pool then stalls on
    descheduled threads, and small ops slow down by 10-40x (seen on a 2-core machine)."""
    if hasattr(os, "getloadavg"):
        load, cores = os.getloadavg()[0], default_threads()
        if load > 0.5 * cores:
            print(f"warning: load average {load:.1f} on {cores} cores before this run: numbers are not "
                  f"clean; rerun on an idle machine (or try --threads 1)", flush=True)


def print_json(name: str, payload: dict) -> None:
    print("json " + json.dumps({"bench": name, **payload}, sort_keys=True))


def print_ratio(label: str, value: float) -> None:
    """The last line of every benchmark."""
    print(f"ratio {label}: {value:.2f}x", flush=True)


def machine() -> dict:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "load_avg_1min": load,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": default_threads(),
        "python": sys.version.split()[0],
        "cuda": torch.cuda.is_available(),
    }
