"""Process settings for training on small CPUs: torch threads and the C allocator's reuse of memory.

Why the allocator: a GRPO update allocates and frees ~100 MB of activations per micro-batch.
With glibc's defaults, blocks above the (dynamic) mmap threshold are unmapped when freed and
the top of the heap is trimmed back to the OS, so the next micro-batch touches fresh pages
again: every 4 KiB page is a page fault plus zeroing. On the development VM (Firecracker with
free-page reporting) a fault costs ~4 µs; an update of 64 completions took 20–50 k of them.
Keeping freed memory in the process (mmap threshold 32 MiB, trim threshold 1 GiB) removed
them and made the vs_trl GRPO step (64 completions) ~10% faster and the update of the default
recipe (256 completions) ~3% faster (docs/performance.md, row 17). The cost: the
process's resident memory stays at its peak instead of shrinking after each update (the peak
itself is unchanged). PyTorch's CPU tuning guide reaches the same end with jemalloc/tcmalloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import torch

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's maximum (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 1 << 30


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``gnu_get_libc_version`` and ``mallopt``), else None."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return None
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return libc


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks up to 32 MiB (and up to 1 GiB of heap top) for reuse.

    Returns False, changing nothing, where the C library is not glibc (macOS, musl, Windows).
    Setting the mmap threshold explicitly also turns off glibc's dynamic threshold."""
    libc = glibc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.warning("glibc %s refused mallopt: freed memory is returned to the OS as usual",
                    libc.gnu_get_libc_version().decode())
    return ok


def configure(threads: int = 0, reuse_memory: bool = True) -> None:
    """torch CPU threads (0 = torch's default) and, when asked, :func:`keep_freed_memory`."""
    if threads:
        torch.set_num_threads(threads)
    if reuse_memory:
        keep_freed_memory()
