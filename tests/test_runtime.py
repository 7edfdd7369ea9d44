"""runtime.keep_freed_memory: freed blocks are reused without page faults (glibc only)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from r1lab import runtime

PROBE = r"""
import ctypes, ctypes.util, resource, sys
from r1lab import runtime
if sys.argv[1] == "1":
    assert runtime.keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
n, k = 4 << 20, 16


def micro_batch():  # allocate 64 MiB of 4 MiB activations, touch every page, free them all
    ps = [libc.malloc(n) for _ in range(k)]
    for p in ps:
        libc.memset(p, 1, n)
    for p in ps:
        libc.free(p)


for _ in range(3):
    micro_batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
micro_batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(reuse: bool) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if reuse else "0"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(runtime.glibc() is None, reason="mallopt needs glibc (this C library is not glibc)")
def test_keep_freed_memory_reuses_pages():
    pages = (64 << 20) // 4096
    assert _faults(True) < pages // 20  # the blocks come back from the heap: (almost) no faults
    assert _faults(False) > pages // 2  # glibc's default trims them back to the OS: the pages fault again


def test_configure_sets_threads():
    import torch

    old = torch.get_num_threads()
    try:
        runtime.configure(threads=1, reuse_memory=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)
