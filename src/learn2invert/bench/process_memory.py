"""This process's resident memory (Linux ``/proc``), as the memory benchmarks measure it on the CPU.

:mod:`learn2invert.bench.memory` (the i-RIM grid) and :mod:`learn2invert.bench.config_memory`
(any config) both take a step's peak as the resident-set high-water mark above the resident set
before the step, after returning freed heap pages to the OS.
"""
from __future__ import annotations


def rss_bytes(field: str) -> int:
    """A memory figure of this process from ``/proc/self/status`` in bytes: ``VmRSS`` (resident now) or
    ``VmHWM`` (resident high-water mark)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so the step's peak is not hidden
    by memory the warm-up step freed but the allocator kept resident."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measurement is then an under-estimate
        pass


__all__ = ["release_free_heap", "rss_bytes"]
