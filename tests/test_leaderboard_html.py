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
    write_json,
)
from retrdistill.evaluation.leaderboard_html import render_html, write_html

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
    # mean section + two datasets, each a table of four systems, the three others against the baseline, and a
    # plot with four points
    assert list(dom.tables) == ["table-mean", "vs-mean", "table-ds0", "vs-ds0", "table-ds1", "vs-ds1"]
    assert [len(rows) for rows in dom.tables.values()] == [4, 3] * 3
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
    assert [len(dom.tables[t]) for t in ("table-mean", "table-ds0", "table-ds1")] == [4, 4, 4]
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
    # click the ms/query header after the page's own script ran
    heads = re.search(r'<table class="sortable" id="table-ds0"><thead><tr>(.*?)</tr>', html).group(1)
    col = [re.sub(r"<[^>]+>", "", h) for h in heads.split("</th>")].index("ms/query")
    click = f"document.querySelectorAll('#table-ds0 thead th')[{col}].click();" * clicks
    page.write_text(html.replace("</body>", f"<script>{click}</script></body>"))
    dump = _chromium(tmp_path, page, "--dump-dom")
    rows = _parse(dump).tables["table-ds0"]
    latencies = [float(r[col]) for r in rows]
    assert latencies == sorted(latencies, reverse=expected == "descending")
    assert [r[1].replace("baseline", "") for r in rows][0] == (
        "cross-encoder" if expected == "descending" else "bm25-nostem"
    )
    assert re.search(rf'<th data-type="num" aria-sort="{expected}"[^>]*>ms/(<wbr>)?query</th>', dump)


# ------------------------------------------------------------ against the baseline, axes, columns, coverage
def _head(html: str, table: str) -> list[str]:
    heads = re.search(rf'<table class="sortable" id="{table}"><thead><tr>(.*?)</tr>', html).group(1)
    return [re.sub(r"<[^>]+>", "", h).replace("\u00a0", " ") for h in heads.split("</th>")[:-1]]


def test_delta_p_value_and_wins_ties_losses_sit_beside_the_primary_metric():
    html = render_html(_board())
    dom = _parse(html)
    assert _head(html, "table-ds0")[:7] == ["#", "System", "nDCG@10", "\u0394 nDCG@10", "p", "W/T/L", "R@100"]
    rows = {r[1].replace("baseline", ""): r for r in dom.tables["table-ds0"]}
    assert rows["cross-encoder"][3:6] == ["+0.0461", "0.003", "20/3/20"]  # 0.7730 - 0.7269, corrected p
    assert rows["bm25-nostem"][3:6] == ["\u22120.0393", "0.400", "20/3/20"]
    assert rows["bm25"][3:6] == ["\u2014"] * 3  # the baseline itself
    # the mean over datasets: a Δ, no test (none was run on the means)
    assert _head(html, "table-mean")[:5] == ["#", "System", "nDCG@10", "\u0394 nDCG@10", "R@100"]
    # the p-value is shown, not only a missing dagger, and the columns are explained
    assert "Holm-corrected p-value of the two-sided paired Student t-test" in html
    # every metric against the baseline, folded under the table
    assert 'id="against-ds0"' in html and "\u0394\u00a0R@100" in html


def test_no_delta_columns_without_a_baseline():
    board = _board()
    board.baseline = None
    for row in board.rows:
        row.significance.clear()
    html = render_html(board)
    assert "\u0394" not in html and _head(html, "table-ds0")[:4] == ["#", "System", "nDCG@10", "R@100"]


def _y_ticks(svg: str) -> list[float]:
    return [float(t) for t in re.findall(r'<text class="tick" x="[\d.]+" y="[\d.]+" text-anchor="end">([^<]+)</text>',
                                         svg)]


def test_value_axes_start_at_zero():
    from retrdistill.evaluation.leaderboard_html import value_ticks

    assert value_ticks([0.7269, 0.8185]) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    small = value_ticks([0.0793, 0.0720])  # not an axis from 0.06 that makes 0.007 look large
    assert small[0] == 0.0 and 0.0793 <= small[-1] <= 0.1
    assert value_ticks([0.0, 0.0]) == [0.0, 1.0]
    board = Leaderboard(baseline="a")
    board.add(Row("a", "d", {"ndcg@10": 0.0720}, ms_per_query=1.0))
    board.add(Row("b", "d", {"ndcg@10": 0.0793}, ms_per_query=2.0))
    ticks = _y_ticks(render_html(board))
    assert ticks[0] == 0.0 and 0.0793 <= ticks[-1] <= 0.1
    ticks = _y_ticks(render_html(_board()))
    assert ticks[0] == 0.0 and ticks[-1] == 1.0


def test_charts_of_one_point_are_left_out():
    board = Leaderboard(baseline="a")
    board.add(Row("a", "d", {"ndcg@10": 0.5}, ms_per_query=1.0))
    board.add(Row("b", "d", {"ndcg@10": 0.6}))
    assert "<svg" not in render_html(board)  # one system with a latency: nothing to compare
    curve = {"metric": "pseudo-mrr@10", "student": "s", "best_step": 10, "points": [{"step": 10, "value": 0.61}]}
    board = Leaderboard()
    board.add(Row("s", "d", {"ndcg@10": 0.5}, validation=curve))
    assert 'class="curve"' not in render_html(board)
    board.rows[0].validation = {**curve, "points": [{"step": 10, "value": 0.61}, {"step": 20, "value": 0.64}]}
    html = render_html(board)
    assert html.count('<svg id="curve-') == 1 and "s: validation pseudo-mrr@10" in html
    # its value axis runs from 0, not from just under 0.61
    labels = re.findall(r'<svg id="curve-[^"]*".*?</svg>', html)[0]
    assert '>0</text>' in labels and ">1</text>" in labels


def test_a_column_every_row_lacks_is_left_out():
    from retrdistill.evaluation.leaderboard import render_markdown

    board = Leaderboard(baseline="a")
    for name, ndcg in (("a", 0.5), ("b", 0.6)):
        board.add(Row(name, "with-recall", {"ndcg@10": ndcg, "recall@100": ndcg + 0.1}, ms_per_query=1.0))
        board.add(Row(name, "without", {"ndcg@10": ndcg - 0.1}, ms_per_query=1.0))
    html = render_html(board)
    assert "R@100" in _head(html, "table-ds0") and "R@100" not in _head(html, "table-ds1")
    assert "R@100" not in _head(html, "table-mean")  # no system has it on every dataset: no mean
    for row in _parse(html).tables["table-ds1"] + _parse(html).tables["table-mean"]:
        assert "\u2014" not in row[2:3]
    markdown = render_markdown(board)
    without = markdown.split("## without")[1]
    assert "R@100" not in without and "R@100" in markdown.split("## with-recall")[1].split("## without")[0]
    assert "R@100" not in markdown.split("## Mean over 2 datasets")[1].split("## with-recall")[0]


def test_the_page_says_which_queries_were_scored_and_warns_of_zero_scores():
    from retrdistill.evaluation.leaderboard import query_coverage

    board = _board()
    board.coverage["msmarco-dl-5k"] = query_coverage(
        50, 43, {"without_judgments": [f"u{i}" for i in range(7)], "zero_for_every_system": ["q1", "q2"]},
        judged_documents_not_in_corpus=3)
    html = render_html(board)
    assert "<h2>msmarco-dl-5k (43 of 50 queries judged)</h2>" in html
    assert "43 of 50 queries judged: every mean is over these 43." in html
    assert "7 queries without judgments (not scored): u0, u1, u2, u3, u4, u5, u6." in html
    warning = re.search(r'<p class="warning" role="alert">(.*?)</p>', html).group(1)
    assert "2 of the 43 judged queries score 0 on nDCG@10 for every system (q1, q2)" in warning
    assert "the qrels judge 3 passages the corpus lacks" in warning
    assert html.count('class="warning"') == 1  # the other dataset has no coverage recorded: no claim made


WIDE_COSTS = dict(encode_passages_per_s=12635.3, ms_per_query=45.7, flops_per_query=12_700.0, query_terms=21.1,
                  doc_terms=75.9, index_bytes=7_650_000, parameters=109_500_000, backend="onnx-int8")


def _wide_board() -> Leaderboard:
    """Every column the page can have: four metrics, Δ / p / W/T/L, every cost, long system names."""
    board = Leaderboard(title="wide", baseline="all-MiniLM-L6-v2 (base)",
                        metric_order=["ndcg@10", "recall@100", "mrr@10", "map"])
    names = ["all-MiniLM-L6-v2 (base)", "distilled MiniLM-L6 (student), Margin-MSE on the teacher's scores",
             "hybrid teacher: mpnet + tiny-BERT SPLADE, z-scored mean (re-ranks its members' pooled top 100)",
             "SPLADE, hybrid teacher (splade-d1's recipe)", "BM25"]
    for i, name in enumerate(names):
        row = Row(name, "msmarco-dl-5k", {m: 0.7 + 0.01 * i + 0.001 * j for j, m in enumerate(board.metric_order)},
                  n_queries=43, **WIDE_COSTS)
        if i:
            for m in board.metric_order:
                row.significance[m] = Significance(board.baseline, "fisher", "holm", 0.05, 0.0004, 0.0012, 21, 3, 19)
        board.add(row)
    return board


MEASURE = """<script>(function () {
  var t = document.getElementById("table-ds0"), w = document.getElementById("wrap-ds0");
  var heads = Array.prototype.map.call(t.tHead.rows[0].cells, function (c) { return c.textContent; });
  var col = heads.indexOf("\\u0394\\u00a0nDCG@10");
  var out = {inner: window.innerWidth, page: document.documentElement.scrollWidth, table: t.scrollWidth,
             wrap: w.clientWidth, wrapScroll: w.scrollWidth, col: col,
             delta: Array.prototype.map.call(t.tBodies[0].rows, function (r) { return r.cells[col].textContent; })};
  var pre = document.createElement("pre"); pre.id = "measure"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();</script></body>"""


@needs_chromium
@pytest.mark.parametrize("width", [1400, 800])
def test_the_table_fits_a_1400_px_window_and_scrolls_in_its_own_box_at_800(tmp_path, width):
    import html as html_module
    import json

    page = tmp_path / "wide.html"
    write_html(_wide_board(), page)
    page.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE), encoding="utf-8")
    dump = _chromium(tmp_path, page, "--dump-dom", f"--window-size={width},900")
    got = json.loads(html_module.unescape(re.search(r'<pre id="measure">(.*?)</pre>', dump, re.S).group(1)))
    assert got["inner"] == width  # the page was laid out at that width
    # the Δ column is there, with a signed value on every row but the baseline's
    assert got["col"] == 3
    assert got["delta"][0] == "\u2014" or any(v == "\u2014" for v in got["delta"])
    assert sum(v.startswith("+") for v in got["delta"]) == 4
    assert got["page"] <= width  # never a page-wide horizontal scroll
    assert got["wrap"] <= width
    if width == 1400:
        assert got["table"] <= width and got["wrapScroll"] <= got["wrap"]  # the whole table is visible
