"""The prose speaks of the product, not of how it was made: no working-period numbers ("measured in the fifth
sitting"), no tracker references, no mention of whoever assisted. A figure is dated by the file that
holds it and the machine it was measured on.

Covered: README.md, docs/**/*.md, pipelines/*.yaml, benchmarks/**/*.py and *.md, retrdistill/**/*.py, cli/*.py and
tests/*.py. Measured data (benchmarks/results/*.json, generated leaderboards' JSON) is not prose and is not read.
This file is left out: its patterns and allowed lines name what it looks for.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GLOBS = ("README.md", "docs/**/*.md", "pipelines/*.yaml", "benchmarks/**/*.py", "benchmarks/**/*.md",
         "retrdistill/**/*.py", "cli/*.py", "tests/*.py")
# the words are split so that this file's own source does not spell them
PATTERNS = {
    "a working-period word": re.compile(r"\bsess" r"ion\b", re.IGNORECASE),
    "an assistant word": re.compile(r"\bhelp" r"er\b", re.IGNORECASE),
    "a tracker reference": re.compile(r"\biss" r"ue\s+#\d+", re.IGNORECASE),
    "a bracketed tracker number": re.compile(r"\(#\d+\)"),
    "a tracker number in prose": re.compile(r"(?:^|[\s(\[])#\d+\b"),
}
# Legitimate technical uses, as exact lines (stripped): pytest's fixture scope, and ONNX Runtime's inference
# object held by the ONNX backend. Anything else that matches is prose to rewrite.
_W = "sess" "ion"
ALLOWED = {
    "retrdistill/encoding/backends.py": {
        f'self.{_W} = ort.Inference{_W.title()}(str(path), so, providers=["CPUExecutionProvider"])',
        f"return self.{_W}.run(None, feeds)[0]",
    },
    "tests/conftest.py": {
        f'@pytest.fixture(scope="{_W}")',
        f'"""One cache folder (corpora, embeddings, BM25) for the {_W}\'s fixtures built on ``small_collection``."""',
    },
    "tests/test_rerank.py": {
        f"retriever = Retriever.load(small_index)  # all-MiniLM-L6-v2 over small_collection (the {_W}'s index)",
    },
    "tests/test_sparse_index.py": {
        f"``small_cache`` with the contract test's sparse case, so the corpus is encoded once per {_W}.",
    },
}


def _files() -> list[Path]:
    found = {p for pattern in GLOBS for p in ROOT.glob(pattern) if p.is_file()}
    return sorted(p for p in found if p.resolve() != Path(__file__).resolve())


def offending_lines(files: list[Path], root: Path = ROOT) -> list[str]:
    """``path:line: what (the line)`` for every line that matches a pattern and is not an allowed line."""
    out = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        allowed = ALLOWED.get(rel, set())
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip() in allowed:
                continue
            for what, pattern in PATTERNS.items():
                if pattern.search(line):
                    out.append(f"{rel}:{number}: {what}: {line.strip()[:160]}")
                    break
    return out


def test_the_prose_does_not_say_how_it_was_made():
    files = _files()
    assert len(files) > 100  # the globs found the tree
    bad = offending_lines(files)
    assert not bad, "rewrite these to speak of the product (a date, the machine, the file):\n" + "\n".join(bad)


def test_the_check_names_file_and_line(tmp_path):
    word, tracker = "sess" "ion", "iss" "ue"
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text("\n".join([
        "A figure measured on 2 CPU cores (`benchmarks/results/x.json`, 2026-12-02).",
        f"Measured in {word} 5 on the quiet machine.",
        f"Fixed in (#4242); see {tracker} #4243 and #4244 there.",
        "A colour (`color:#888`) in CSS, doc#1 as an id, `#{i}` in code: fine.",
        "The " + "help" + "er wrote this.",
        "Fixed in (#4242).",
    ]) + "\n", encoding="utf-8")
    assert offending_lines([page], tmp_path) == [
        f"docs/page.md:2: a working-period word: Measured in {word} 5 on the quiet machine.",
        f"docs/page.md:3: a tracker reference: Fixed in (#4242); see {tracker} #4243 and #4244 there.",
        "docs/page.md:5: an assistant word: The " + "help" + "er wrote this.",
        "docs/page.md:6: a bracketed tracker number: Fixed in (#4242).",
    ]
    (tmp_path / "docs" / "page.md").write_text("see #4244 there\n", encoding="utf-8")
    assert offending_lines([page], tmp_path) == ["docs/page.md:1: a tracker number in prose: see #4244 there"]
