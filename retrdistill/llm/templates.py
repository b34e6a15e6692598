"""Prompt templates as files: chat turns with ``{placeholders}``, bundled ones under ``templates/``.

A template file is a sequence of sections, each opened by a line ``## system``, ``## user`` or ``## assistant``;
lines before the first section are a description (ignored). A section's text, stripped, is that message;
``{name}`` is filled from the inputs (``{passage}``, ``{query}``, ``{query_type}``, ...) and ``{{``/``}}`` are
literal braces. ``user``/``assistant`` pairs before the last ``user`` section are few-shot examples.

A template is named by a bundled name (``inpars``, ``query-types``, ``negative``: :func:`bundled`) or by the
path of the user's own file. Its :attr:`Template.digest` hashes the parsed sections, not the file's bytes, so
editing the description regenerates nothing; editing a message regenerates what that template wrote, nothing
written by another template.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

from retrdistill.errors import ConfigError, DataError

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
_SECTION = re.compile(r"^##\s*(system|user|assistant)\s*$")


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    messages: tuple[tuple[str, str], ...]  # (role, text with placeholders)

    @property
    def fields(self) -> set[str]:
        """The placeholders the template fills."""
        return {name for _, text in self.messages for _, name, _, _ in string.Formatter().parse(text) if name}

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.messages).encode("utf-8")).hexdigest()[:24]

    def render(self, **values: str) -> list[dict[str, str]]:
        """The chat messages with every placeholder filled; a missing value is a ConfigError naming the file."""
        missing = sorted(self.fields - set(values))
        if missing:
            raise ConfigError(f"template {self.path}: no value for {', '.join('{' + m + '}' for m in missing)}; "
                              f"this use fills {', '.join(sorted(values)) or 'nothing'}")
        return [{"role": role, "content": text.format_map(values)} for role, text in self.messages]


def bundled() -> list[str]:
    """The names of the bundled templates."""
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.txt"))


def load_template(ref: str) -> Template:
    """A bundled template by name, or a template file by path."""
    path = TEMPLATES_DIR / f"{ref}.txt" if ref in bundled() else Path(ref).expanduser()
    if not path.is_file():
        raise ConfigError(f"template {ref!r} is neither a bundled template ({', '.join(bundled())}) nor a file")
    return parse_template(path.read_text(encoding="utf-8"), path, name=ref)


def parse_template(text: str, path: Path, *, name: str = "") -> Template:
    sections: list[tuple[str, list[str], int]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        found = _SECTION.match(line.strip())
        if found:
            sections.append((found.group(1), [], lineno))
        elif sections:
            sections[-1][1].append(line)
    if not sections:
        raise DataError(path, None, "expected at least one section line '## system', '## user' or '## assistant'")
    messages = []
    for role, lines, lineno in sections:
        body = "\n".join(lines).strip()
        if not body:
            raise DataError(path, lineno, f"the '## {role}' section is empty")
        try:
            list(string.Formatter().parse(body))
            body.format_map(_Anything())
        except (ValueError, IndexError) as exc:
            raise DataError(path, lineno, f"bad placeholder in the '## {role}' section ({exc}); write literal "
                                          f"braces as {{{{ and }}}}") from None
        messages.append((role, body))
    if messages[-1][0] != "user":
        raise DataError(path, sections[-1][2], "the last section must be '## user' (what the model answers)")
    return Template(name or path.stem, path, tuple(messages))


class _Anything(dict):
    def __missing__(self, key: str) -> str:
        if not key.isidentifier():
            raise ValueError(f"placeholder {{{key}}} is not a name")
        return ""
