"""Progress bars for long work (tqdm, on stderr). Off in the library by default; the CLI turns them on.

One labelled bar per unit of work: ``bar(total, "mine (dense)", "q")``. A bar opened while another is open is
nested in it: on a terminal it is drawn on the line below (tqdm's ``position``) and removed when it closes, and
the time it ran is not counted in the rate of the bars around it, so a ``mine`` bar that waits for the corpus
to be encoded (its own bar below it) reports the rate of mining, not of mining plus encoding.

:func:`silence_libraries` turns off the bars libraries draw on their own (transformers' "Loading weights",
``datasets``, the Hugging Face hub, sentence-transformers' tqdm): ``retrdistill -q`` shows no bar at all.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

_enabled = os.environ.get("RETRDISTILL_PROGRESS", "0") == "1"
_open: list["_Bar"] = []  # the bars open now, outermost first


def enable(on: bool = True) -> None:
    """Turn our bars on or off; a fresh start (bars left open by an interrupted run no longer nest new ones)."""
    global _enabled
    _enabled = on
    _open.clear()


def enabled() -> bool:
    return _enabled


def bar(total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Any:
    """A tqdm bar labelled ``desc`` counting ``unit`` when progress is enabled, else a no-op object with the same
    ``update``/``close`` methods. A bar opened inside another is nested in it (see the module's docstring)."""
    if not _enabled:
        return _Silent()
    from tqdm.auto import tqdm

    depth = len(_open)
    terminal = _isatty(sys.stderr)
    # on a terminal a nested bar is drawn below the ones it is in and removed when done; elsewhere (a log file)
    # every bar writes its own lines, with no cursor movement
    bar_ = tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True,
                position=depth if terminal else 0, leave=depth == 0 or not terminal)
    out = _Bar(bar_, desc)
    _open.append(out)
    return out


def open_labels() -> list[str]:
    """The labels of the bars open now, outermost first."""
    return [b.desc for b in _open]


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Bar:
    """A tqdm bar that knows the bars it is nested in: closing it takes the time it ran out of their rates."""

    def __init__(self, bar_: Any, desc: str) -> None:
        self.bar = bar_
        self.desc = desc
        self.started = time.time()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_postfix_str(self, text: str) -> None:
        self.bar.set_postfix_str(text)

    @property
    def n(self) -> int:
        return self.bar.n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.bar.close()
        if self in _open:
            _open.remove(self)
        spent = time.time() - self.started
        for outer in _open:  # the bars this one was nested in: their rate is of their own work
            outer.exclude(spent)

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` (spent in a nested bar) out of this bar's elapsed time and rate."""
        for attr in ("start_t", "last_print_t"):
            if hasattr(self.bar, attr):
                setattr(self.bar, attr, getattr(self.bar, attr) + seconds)

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Silent:
    n = 0

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class LogHandler(logging.StreamHandler):
    """A logging handler that writes through tqdm, so a log line printed while bars are drawn lands above them
    rather than inside the current bar's line."""

    def emit(self, record: logging.LogRecord) -> None:
        if not _open:
            super().emit(record)
            return
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # as logging's own handlers do: never raise from logging
            self.handleError(record)


# ------------------------------------------------------------------ the libraries' own bars
_LIBRARY_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
_silenced: dict[str, Any] = {}


def silence_libraries(on: bool = True) -> None:
    """Turn off (``on``) or back on the progress bars that libraries draw themselves: transformers' ("Loading
    weights", "Writing model shards"), ``datasets``', the Hugging Face hub's and any other tqdm bar
    (sentence-transformers'). Environment variables cover libraries not imported yet and worker processes
    (torchrun); libraries already imported are told directly, and tqdm is made to start every bar disabled.
    Our own bars are governed by :func:`enable`. ``on=False`` undoes only what an earlier call did."""
    if on:
        if _silenced:
            return
        _silenced["env"] = {key: os.environ.get(key) for key in _LIBRARY_ENV}
        os.environ.update(_LIBRARY_ENV)
        _silenced["libraries"] = _library_switches(disable=True)
        _silenced["tqdm"] = _tqdm_disabled_by_default()
        return
    if not _silenced:
        return
    for key, value in _silenced.pop("env").items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    for enable_again in _silenced.pop("libraries"):
        enable_again()
    restore = _silenced.pop("tqdm")
    if restore is not None:
        restore()


def _library_switches(disable: bool) -> list[Any]:
    """Disable the bars of transformers, datasets and the hub where those are imported already (a module not
    imported yet reads the environment when it is); the calls that turn back on what was on."""
    undo = []
    hub = sys.modules.get("huggingface_hub")
    if hub is not None:
        from huggingface_hub import utils as hub_utils

        if not hub_utils.are_progress_bars_disabled():
            hub_utils.disable_progress_bars()
            undo.append(hub_utils.enable_progress_bars)
    if "transformers" in sys.modules:
        from transformers.utils import logging as tf_logging

        if tf_logging.is_progress_bar_enabled():
            tf_logging.disable_progress_bar()
            undo.append(tf_logging.enable_progress_bar)
    if "datasets" in sys.modules:
        import datasets

        if datasets.is_progress_bar_enabled():
            datasets.disable_progress_bars()
            undo.append(datasets.enable_progress_bars)
    return undo


def _tqdm_disabled_by_default():
    """Make every tqdm bar start disabled (``TQDM_DISABLE`` is read only when tqdm is imported, and the CLI
    imports it first); the call that restores tqdm, or None."""
    try:
        from tqdm import std
    except ImportError:  # pragma: no cover - tqdm comes with the stack
        return None
    original = std.tqdm.__init__

    def init(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    std.tqdm.__init__ = init

    def restore() -> None:
        std.tqdm.__init__ = original

    return restore
