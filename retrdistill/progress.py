"""Progress bars for long work (tqdm, on stderr). Off in the library by default; the CLI turns them on."""

from __future__ import annotations

import os
from typing import Any

_enabled = os.environ.get("RETRDISTILL_PROGRESS", "0") == "1"


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def bar(total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Any:
    """A tqdm bar when progress is enabled, else a no-op object with the same update/close methods."""
    if not _enabled:
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True)


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: object) -> None:
        pass
