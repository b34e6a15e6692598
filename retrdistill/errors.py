"""Errors that reach users. Each names where the problem is and what was expected."""

from __future__ import annotations

from pathlib import Path


class RetrdistillError(Exception):
    """Base class: a problem the user can fix (bad data, bad config, stale artefact)."""


class DataError(RetrdistillError):
    """A malformed input file: names the file, the 1-based line (when known) and what was expected."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class ConfigError(RetrdistillError):
    """A bad pipeline file or option: names the file, line (when known), key and what was expected."""

    def __init__(self, problem: str, path: str | Path | None = None, line: int | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.problem = problem
        if self.path and line is not None:
            msg = f"{self.path}, line {line}: {problem}"
        elif self.path:
            msg = f"{self.path}: {problem}"
        else:
            msg = problem
        super().__init__(msg)


class ManifestError(RetrdistillError):
    """An artefact whose manifest is missing, foreign, from a newer format, or does not match its files."""
