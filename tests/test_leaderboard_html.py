"""The leaderboard's HTML page: self-contained, and rendered by headless Chromium with table, plot and sorting."""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from retrdistill.evaluation.leaderboard import (
    MARKER,
    Leaderboard,
    Row,
    Significance,
    load_leaderboard,
    write_html,
    write_json,
)
from retrdistill.evaluation.leaderboard_html import render_html

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (CI installs it with `apt-get install -y chromium`)"
)
# (system, nDCG@10, R@100, ms/query, index bytes, parameters); numbers in the range the sample gives
SYSTEMS = [
    ("bm25", 0.7269, 0.7771, 0.58, 1_468_006, None),
    ("bm25-nostem", 0.6876, 0.7341, 0.57, 1_677_722, None),
    ("minilm-distilled", 0.7412, 0.8120, 4.2, 7_680_000, 22_700_000),
    ("cross-encoder", 0.7730, 0.7771, 310.0, 1_468_006, 33_400_000),
]


def _board() -> Leaderboard:
    board = Leaderboard(title="test <board> & co", baseline="bm25")
    for dataset, shift in (("msmarco-dl-5k", 0.0), ("other-set", -0.1)):
        for name, ndcg, recall, ms, size, params in SYSTEMS:
            row = Row(
                system=name,
                dataset=dataset,
                metrics={"ndcg@10": ndcg + shift, "recall@100": recall + shift},
                n_queries=43,
                ms_per_query=ms,
                index_bytes=size,
                parameters=params,
                provenance={"model": "0f" * 32},
            )
            if name != "bm25":
                p = 0.003 if name == "cross-encoder" else 0.4
                row.significance["ndcg@10"] = Significance("bm25", "student", "holm", 0.05, p / 3, p, 20, 3, 20)
            board.add(row)
    return board


class _Dom(HTMLParser):
    """Collects what the tests look for in a page: tables, their body rows' cells, SVG circles and texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.circles = 0
        self.svgs = 0
        self.svg_texts: list[str] = []
        self._table: str | None = None
        self._in_body = self._in_cell = self._in_svg_text = False
        self._cell = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.tables[self._table].append([])
        elif tag == "td" and self._in_body:
            self._in_cell, self._cell = True, ""
        elif tag == "svg":
            self.svgs += 1
        elif tag == "circle":
            self.circles += 1
        elif tag == "text" and a.get("class") == "label":
            self._in_svg_text = True

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._in_cell:
            self.tables[self._table][-1].append(self._cell.strip())
            self._in_cell = False
        elif tag == "text":
            self._in_svg_text = False

    def handle_data(self, data):
        if self._in_cell:
            self._cell += data
        if self._in_svg_text:
            self.svg_texts.append(data)


def _parse(html: str) -> _Dom:
    dom = _Dom()
    dom.feed(html)
    return dom


def _chromium(tmp_path: Path, page: Path, *args: str) -> str:
    profile = tmp_path / "chromium-profile"
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_page_is_self_contained_and_complete():
    html = render_html(_board())
    for external in ("http:", "https:", "src=", "href=", "@import", "url(", "<link"):
        assert external not in html, external
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert "test &lt;board&gt; &amp; co" in html and "<board>" not in html
    dom = _parse(html)
    # mean section + two datasets, each a table of four systems and a plot with four points
    assert list(dom.tables) == ["table-mean", "table-ds0", "table-ds1"]
    assert all(len(rows) == 4 for rows in dom.tables.values())
    assert dom.svgs == 3 and dom.circles == 12
    assert sorted(dom.svg_texts[:4]) == sorted(s[0] for s in SYSTEMS)
    # latency spans more than a factor of 20: log scale
    assert "query latency (ms/query), log scale" in html
    # significance: only the cross-encoder's nDCG@10 (corrected p .003) is marked, in both datasets
    marked = [row[1] for t in ("table-ds0", "table-ds1") for row in dom.tables[t] if MARKER in row[2]]
    assert marked == ["cross-encoder", "cross-encoder"]


def test_plot_falls_back_to_index_size_without_latency():
    board = Leaderboard(baseline="a")
    board.add(Row("a", "d", {"ndcg@10": 0.5}, index_bytes=2_000_000))
    board.add(Row("b", "d", {"ndcg@10": 0.6}, index_bytes=3_000_000))
    html = render_html(board)
    assert "index size" in html and "log scale" not in html
    assert _parse(html).circles == 2
    board = Leaderboard()
    board.add(Row("a", "d", {"ndcg@10": 0.5}))
    assert "<svg" not in render_html(board)  # nothing to plot against: no plot


@needs_chromium
def test_chromium_renders_table_and_plot(tmp_path):
    json_path = tmp_path / "lb.json"
    write_json(_board(), json_path)
    page = tmp_path / "lb.html"
    write_html(load_leaderboard(json_path), page)  # rebuilt from the stored JSON
    dom = _parse(_chromium(tmp_path, page, "--dump-dom"))
    assert len(dom.tables) == 3 and all(len(rows) == 4 for rows in dom.tables.values())
    assert dom.tables["table-ds0"][0][1].startswith("cross-encoder")
    assert dom.svgs == 3 and dom.circles == 12
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1200,900")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert img.size == (1200, 900)
    assert colours is not None and len(colours) > 50  # text, table stripes and plot, not a blank page


@needs_chromium
@pytest.mark.parametrize(("clicks", "expected"), [(1, "descending"), (2, "ascending")])
def test_clicking_a_header_sorts_the_table(tmp_path, clicks, expected):
    page = tmp_path / "lb.html"
    write_html(_board(), page)
    html = page.read_text()
    # click the ms/query header (column 5: #, System, nDCG@10, R@100, ms/query) after the page's own script ran
    click = "document.querySelectorAll('#table-ds0 thead th')[4].click();" * clicks
    page.write_text(html.replace("</body>", f"<script>{click}</script></body>"))
    dump = _chromium(tmp_path, page, "--dump-dom")
    rows = _parse(dump).tables["table-ds0"]
    latencies = [float(r[4]) for r in rows]
    assert latencies == sorted(latencies, reverse=expected == "descending")
    assert [r[1].replace("baseline", "") for r in rows][0] == (
        "cross-encoder" if expected == "descending" else "bm25-nostem"
    )
    assert re.search(rf'<th data-type="num" aria-sort="{expected}"[^>]*>ms/query</th>', dump)
