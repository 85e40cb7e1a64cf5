"""Giving freed heap memory back to the operating system.

glibc keeps memory that Python and numpy free in its arenas, and raises its mmap threshold
after large frees, so a daemon that periodically builds and drops large temporary arrays
(compaction) creeps upward in RSS although nothing leaks. `malloc_trim(0)` after such work
returns the free pages; elsewhere (musl, macOS) it is absent and this does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util

_libc = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _malloc_trim = _libc.malloc_trim
    _malloc_trim.argtypes = [ctypes.c_size_t]
    _malloc_trim.restype = ctypes.c_int
except (OSError, AttributeError):  # pragma: no cover - not glibc
    _malloc_trim = None


def trim() -> bool:
    """Return free heap pages to the system; True when something was released."""
    return bool(_malloc_trim(0)) if _malloc_trim is not None else False
