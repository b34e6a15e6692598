"""Peak memory of a block of work, for the cost every manifest records.

``peak_rss_mb`` is the resident set's high-water mark during the block: on Linux the kernel's own ``VmHWM``,
reset at the start of the block through ``/proc/self/clear_refs`` (so each step of one process gets its own
peak), else the highest of the samples. ``peak_anon_mb`` is the highest anonymous resident memory (``RssAnon``:
what the process allocated, as opposed to memory-mapped files, which the kernel can drop) sampled every 20 ms
by a background thread; the kernel keeps no high-water mark for it, so a peak shorter than a few intervals, or
one held while a C call keeps the GIL, can be missed. ``start_*`` are the values when the block began, so a step's own growth is visible.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_INTERVAL_S = 0.02


def _status_kb() -> dict[str, int]:
    out = {}
    try:
        for line in _STATUS.read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon"):
                out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def _fallback_rss_kb() -> int | None:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss // 1024)
    except Exception:  # noqa: BLE001 - no way to read memory here: report nothing rather than fail a step
        return None


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.report()`` -> MB figures (None where unmeasurable)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm_reset = False
        self.start_rss_kb: int | None = None
        self.start_anon_kb: int | None = None
        self.peak_rss_kb: int | None = None
        self.peak_anon_kb: int | None = None

    def __enter__(self) -> "PeakMemory":
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        now = _status_kb()
        self.start_rss_kb = now.get("VmRSS") or _fallback_rss_kb()
        self.start_anon_kb = now.get("RssAnon")
        self.peak_rss_kb, self.peak_anon_kb = self.start_rss_kb, self.start_anon_kb
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(_INTERVAL_S):
            self._take()

    def _take(self) -> None:
        now = _status_kb()
        rss = now.get("VmRSS") or _fallback_rss_kb()
        if rss is not None:
            self.peak_rss_kb = max(self.peak_rss_kb or 0, rss)
        if "RssAnon" in now:
            self.peak_anon_kb = max(self.peak_anon_kb or 0, now["RssAnon"])
        if self._hwm_reset and "VmHWM" in now:
            self.peak_rss_kb = max(self.peak_rss_kb or 0, now["VmHWM"])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._take()

    def report(self) -> dict[str, Any]:
        """Figures so far (callable inside the block: the manifest is written before the block ends)."""
        self._take()

        def mb(kb: int | None) -> float | None:
            return None if kb is None else round(kb / 1024, 1)

        return {"peak_rss_mb": mb(self.peak_rss_kb), "peak_anon_mb": mb(self.peak_anon_kb),
                "start_rss_mb": mb(self.start_rss_kb), "start_anon_mb": mb(self.start_anon_kb)}


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def limit_heap_growth(threshold_bytes: int = 1 << 20) -> bool:
    """Ask glibc to serve allocations of ``threshold_bytes`` and more from their own memory maps, returned to
    the system when freed, and to trim the heap above the same size.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after which blocks of
    training activations (tens of MB each, allocated and freed every step) come from the heap, which fragments
    and keeps what it grew to. A fixed threshold keeps the resident set near what is live. Process-wide, so the
    command line sets it, not the library. Returns False where it cannot be set (not glibc).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold_bytes))) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, int(threshold_bytes)))
    except (OSError, AttributeError):
        return False
