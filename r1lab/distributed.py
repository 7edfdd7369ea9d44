"""Data parallelism over ``torch.distributed``: the same command on 1 process or under ``torchrun``.

    torchrun --nproc-per-node 2 -m r1lab zero --output-dir runs/zero-dp2            # one machine
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --master-addr HOST --master-port 29500 \\
        -m r1lab zero ...                                   # node 0 of 2 (node 1: --node-rank 1)

``init(device)`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and joins
the process group (gloo on CPU, nccl on CUDA, one GPU per local rank); without it every helper
here is the identity of a world of one, so components call them unconditionally.

How an RL step is split (``rl.collect`` and ``rl.update``), so that its result does not depend
on the number of ranks W:

- rollout: the step's B prompts are cut into W contiguous blocks (``block``); rank r samples its
  block with the per-sample random streams of those global sample indices
  (``SamplingParams.stream_offset``) and scores it, then ``gather`` gives every rank the whole
  batch in global order. Everything computed from it (dynamic sampling, advantages, the
  minibatch order, token counts and loss normalisers) is then identical on every rank and equal
  to the single-process value.
- update: kept group g is trained by rank g mod W (``owned``). Each rank back-propagates its own
  rows with the loss weights of the *global* minibatch, and ``sum_gradients`` adds the ranks'
  gradients (one flat all-reduce per optimizer step, DDP's bucketed sum), so clipping and AdamW
  see the single-process gradient up to float summation order. Per-row tensors a rank computed
  for its rows (π_old, π_ref, V_old) are completed with ``sum_tensor``.

Why not ``DistributedDataParallel``'s wrapper: the loss reaches the weights through paths that
do not call the wrapped module's ``forward`` (the shared-prompt pass in ``train/fasttrain.py``,
the lean decode step), and DDP averages where the token-mean loss needs a weighted sum. The
all-reduce is torch.distributed's own; nothing here reimplements communication.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

_JOINED = False  # True once ``init`` joined torchrun's group: a library's own group (vLLM) is not ours


def active() -> bool:
    return _JOINED and dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True when this process was started by torchrun (or another launcher setting its variables)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "auto", timeout_s: float = 1800.0) -> str:
    """Join torchrun's process group when launched by it; returns the device this rank uses."""
    global _JOINED
    cuda = torch.cuda.is_available() and device != "cpu"
    if launched() and not active():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
        _JOINED = True
    if cuda and active():
        return f"cuda:{torch.cuda.current_device()}"
    return "cuda" if cuda and device in ("auto", "cuda") else ("cpu" if device == "auto" else device)


def close() -> None:
    global _JOINED
    if active():
        dist.destroy_process_group()
    _JOINED = False


def barrier() -> None:
    if active():
        dist.barrier()


def block(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """Rank r's contiguous share [lo, hi) of n items: sizes differ by at most one, lower ranks first."""
    r, w = rank() if r is None else r, world() if w is None else w
    base, extra = divmod(n, w)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


def owned(n: int, r: int | None = None, w: int | None = None) -> torch.Tensor:
    """(n,) bool: the items rank r trains (item i belongs to rank i mod w)."""
    r, w = rank() if r is None else r, world() if w is None else w
    return torch.arange(n) % w == r


def _device() -> str:
    return f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order, on every rank (``[obj]`` in a world of one)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def _reduce(values: list[float] | list[int], dtype: torch.dtype, op) -> list:
    """Python numbers reduced over ranks with ``op`` in one all-reduce (themselves in a world of one)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=dtype, device=_device())
    dist.all_reduce(t, op=op)
    return t.tolist()


def all_true(flag: bool) -> bool:
    """True on every rank iff ``flag`` is True on every rank (e.g. a finite loss everywhere)."""
    return bool(_reduce([int(flag)], torch.int32, dist.ReduceOp.MIN)[0])


def sum_gradients(params: list[torch.Tensor]) -> None:
    """Add the ranks' gradients of ``params`` in one flat all-reduce (missing grads count as 0)."""
    if not active():
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_floats(*values: float) -> list[float]:
    """Python numbers summed over ranks (one all-reduce); the values themselves in a world of one."""
    return _reduce(list(values), torch.float64, dist.ReduceOp.SUM)


def sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of ``t`` over ranks, in place. With each rank holding its own rows of a
    tensor and zeros elsewhere, every rank then holds all rows."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# --- FSDP2: the weights, gradients and optimizer state sharded over ranks (``--parallel fsdp``) ---


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """``fully_shard`` each decoder layer, then the root (embeddings, final norm, head), in place.

    Gradients are reduce-scattered as sums (divide factor 1): every rank's loss is already divided
    by the global token count, as in the replicated mode. Between a layer's forward and backward
    its full weights exist only transiently, so a model needs ~1/W of its weight, gradient and
    AdamW memory per rank."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"--parallel fsdp: no decoder layers found on {type(model).__name__} (expected model.layers)")
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM)
    return model


def sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def copy_full(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """``dst``'s parameters and buffers := ``src``'s, gathered one tensor at a time when ``src`` is
    sharded (a collective: every rank calls it; peak extra memory is one full tensor). ``dst`` is
    an unsharded model of the same architecture, e.g. the copy an RL rollout engine samples from."""
    mine = dict(dst.named_parameters())
    mine.update(dict(dst.named_buffers()))
    with torch.no_grad():
        for name, t in [*src.named_parameters(), *src.named_buffers()]:
            full = t.full_tensor() if hasattr(t, "full_tensor") else t
            mine[name].copy_(full)


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> tuple[dict, dict | None]:
    """(model state dict, optimizer state dict), full tensors on CPU, keyed by parameter names.
    A collective: every rank calls it; on a sharded model only rank 0 receives the tensors."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    sd = get_model_state_dict(model, options=opts)
    osd = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer is not None else None
    return sd, osd


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict | None:
    """The optimizer's state dict; of a sharded ``model``, the full one on rank 0 (None elsewhere,
    a collective) in ``full_state``'s keyed-by-name form, which ``load_optimizer`` reads back."""
    if not sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    osd = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return osd if is_main() else None


def load_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Put a full optimizer state dict (``full_state``'s, every rank reads it) into a sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def max_count(n: int) -> int:
    """The largest ``n`` over ranks: with FSDP every rank must run as many forward passes."""
    return int(_reduce([n], torch.int64, dist.ReduceOp.MAX)[0])
