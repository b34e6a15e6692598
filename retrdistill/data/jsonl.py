"""Line-checked JSONL reading: every problem names the file and the 1-based line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill.errors import DataError


@dataclass
class ReadReport:
    """Repairs made while reading, each documented and counted (nothing is dropped silently)."""

    path: str
    rows: int = 0
    bom_removed: bool = False
    crlf_lines: int = 0
    blank_lines_skipped: int = 0
    numeric_ids_converted: int = 0
    empty_texts: int = 0
    notes: list[str] = field(default_factory=list)

    def repairs(self) -> dict[str, int]:
        return {
            k: int(v)
            for k, v in {
                "bom_removed": self.bom_removed,
                "crlf_lines": self.crlf_lines,
                "blank_lines_skipped": self.blank_lines_skipped,
                "numeric_ids_converted": self.numeric_ids_converted,
                "empty_texts": self.empty_texts,
            }.items()
            if v
        }


def iter_lines(path: Path, report: ReadReport) -> Iterator[tuple[int, str]]:
    """Yield (line number, decoded line without its end); BOM and CRLF repaired and counted."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
                report.bom_removed = True
            if raw.endswith(b"\r\n"):
                raw = raw[:-2]
                report.crlf_lines += 1
            elif raw.endswith(b"\n"):
                raw = raw[:-1]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(path, lineno, f"not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 4]!r})") from None
            yield lineno, line


def iter_json_objects(path: Path, report: ReadReport) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in iter_lines(path, report):
        if not line.strip():
            report.blank_lines_skipped += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, lineno, f"expected one JSON object per line: {exc.msg} at column {exc.colno}") from None
        except (ValueError, RecursionError) as exc:  # an integer of > 4300 digits; nesting deeper than Python's stack
            problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise DataError(path, lineno, f"expected one JSON object per line: {problem}") from None
        if not isinstance(obj, dict):
            raise DataError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def get_id(obj: dict[str, Any], path: Path, lineno: int, report: ReadReport, key: str = "_id") -> str:
    if key not in obj:
        raise DataError(path, lineno, f"missing field {key!r} (expected a string id)")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(path, lineno, f"field {key!r} must be a string, got {type(value).__name__}")
    if isinstance(value, int):
        report.numeric_ids_converted += 1
        value = str(value)
    if not value.strip():
        raise DataError(path, lineno, f"field {key!r} is empty")
    if any(c.isspace() for c in value):
        raise DataError(path, lineno, f"field {key!r} ({value!r}) contains whitespace; ids must be single tokens (TREC runs)")
    _check_unicode(value, path, lineno, key)
    return value


def _check_unicode(value: str, path: Path, lineno: int, key: str) -> None:
    """JSON can escape a lone surrogate (``"\\ud800"``), which no UTF-8 file or Arrow column can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(path, lineno, f"field {key!r} holds an unpaired surrogate escape "
                                      f"(\\u{ord(value[exc.start]):04x} at character {exc.start}); expected valid Unicode") from None


def get_text(obj: dict[str, Any], path: Path, lineno: int, key: str, *, required: bool) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise DataError(path, lineno, f"missing field {key!r} (expected a string)")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(path, lineno, f"field {key!r} must be a string, got {type(value).__name__}")
    _check_unicode(value, path, lineno, key)
    return value
