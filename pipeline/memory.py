"""Keeping a process's resident memory near what it uses: fewer malloc arenas, Arrow on malloc, freed memory returned.

glibc gives each thread that allocates its own arena (up to 8 per core) and keeps what is freed in them; Arrow's
default pool (mimalloc) keeps its own. A Beam worker has many threads, so both made freed memory stay resident.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc

import pyarrow as pa

M_ARENA_MAX = -8  # mallopt parameter (malloc.h)
ARENAS = 2


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): the defaults stay
        return None


_LIBC = _libc()


def configure_process() -> None:
    """At a process's start, before its threads allocate: at most ARENAS malloc arenas, Arrow allocating with malloc."""
    if _LIBC is not None:
        _LIBC.mallopt(M_ARENA_MAX, ARENAS)
    pa.set_memory_pool(pa.system_memory_pool())


def release() -> None:
    """After a step that held much and let it go: collect cycles and hand malloc's free pages back to the system."""
    gc.collect()
    trim()


def trim() -> None:
    """Hands malloc's free pages back to the system, without a garbage collection (which costs ~70 ms in a driver
    holding a pipeline's objects, and frees nothing there that reference counting has not already freed)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
