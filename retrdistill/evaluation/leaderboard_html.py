"""The leaderboard as one self-contained HTML page: sortable tables and inline SVG scatter plots.

Nothing is loaded from elsewhere: CSS and the sorting script are inline, fonts are the system's, and a
Content-Security-Policy forbids any other source, so the page works offline and from ``file://``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from retrdistill.evaluation.leaderboard import (
    COST_LABELS,
    MARKER,
    Leaderboard,
    MeanRow,
    Row,
    cost_columns,
    cost_value,
    format_cost,
    format_metric,
    legend,
    metric_label,
)

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px auto;
max-width:1180px;padding:0 16px;color:#1d232b;background:#fff}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2e8;padding-bottom:4px}
p.note{color:#4a5563;margin:4px 0}
.section{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start}
table.sortable{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:5px 10px;border-bottom:1px solid #e6e9ee;text-align:right;white-space:nowrap}
th:nth-child(2),td:nth-child(2){text-align:left}
th{background:#f3f5f8;cursor:pointer;user-select:none;position:relative;padding-right:18px}
th:hover{background:#e6ebf2}th:focus{outline:2px solid #3b73c4;outline-offset:-2px}
th[aria-sort=ascending]::after{content:"\\25B2";position:absolute;right:5px;font-size:9px;top:9px}
th[aria-sort=descending]::after{content:"\\25BC";position:absolute;right:5px;font-size:9px;top:9px}
tr.baseline td{background:#fbf7e9}
.badge{font-size:11px;color:#7a5d00;border:1px solid #d8c06b;border-radius:3px;padding:0 4px;margin-left:6px}
.sig{display:inline-block;width:.8em;text-align:left;color:#b42318;font-weight:600;cursor:help}
td.missing{color:#9aa3ad}
figure{margin:0}figcaption{font-size:12px;color:#4a5563;text-align:center}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;fill:#1d232b}
svg .axis{stroke:#8b95a1}svg .grid{stroke:#edf0f3}svg .pt{fill:#3b73c4;stroke:#fff;stroke-width:1.5}
svg .pt.base{fill:#d08a00}svg .leader{stroke:#9aa3ad;stroke-width:1}svg .tick{fill:#4a5563;font-size:11px}
"""

_JS = """
(function () {
  function key(row, col) {
    var v = row.cells[col].getAttribute("data-value");
    return v === null || v === "" ? null : v;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.tabIndex = 0;
      function sort() {
        var now = th.getAttribute("aria-sort"), numeric = th.getAttribute("data-type") === "num";
        var dir = now === "descending" ? "ascending" : now === "ascending" ? "descending"
                  : (numeric ? "descending" : "ascending");
        Array.prototype.forEach.call(heads, function (h) { h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", dir);
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows), sign = dir === "ascending" ? 1 : -1;
        rows.forEach(function (r, i) { r._i = i; });
        rows.sort(function (a, b) {
          var x = key(a, col), y = key(b, col);
          if (x === null || y === null) { return x === y ? a._i - b._i : (x === null ? 1 : -1); }
          var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
          return c !== 0 ? sign * c : a._i - b._i;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
      });
    });
  });
})();
"""


def render_html(board: Leaderboard) -> str:
    metrics = board.metrics()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(board.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(board.title)}</h1>",
    ]
    if board.baseline:
        parts.append(f'<p class="note">Baseline: <b>{escape(board.baseline)}</b>. Click a column header to sort.</p>')
    else:
        parts.append('<p class="note">Click a column header to sort.</p>')
    if legend(board):
        parts.append(
            f'<p class="note">{escape(legend(board))}. Hover a {MARKER} for p-values and wins/ties/losses.</p>'
        )
    datasets = board.datasets()
    if len(datasets) > 1:
        means = board.mean_rows()
        parts.append(_section(board, f"Mean over {len(datasets)} datasets", "mean", means, metrics))
    for i, ds in enumerate(datasets):
        rows = board.rows_for(ds)
        nq = {r.n_queries for r in rows if r.n_queries is not None}
        title = ds + (f" ({nq.pop()} queries)" if len(nq) == 1 else "")
        parts.append(_section(board, title, f"ds{i}", rows, metrics))
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts) + "\n"


def _section(board: Leaderboard, title: str, ident: str, rows: list[Row] | list[MeanRow], metrics: list[str]) -> str:
    costs = cost_columns(rows)
    head = ['<th data-type="num" aria-sort="none">#</th>', '<th data-type="text" aria-sort="none">System</th>']
    head += [f'<th data-type="num" aria-sort="none">{escape(metric_label(m))}</th>' for m in metrics]
    head += [f'<th data-type="{"text" if c == "backend" else "num"}" aria-sort="none">{escape(COST_LABELS[c])}</th>'
             for c in costs]
    body = []
    for rank, r in enumerate(rows, start=1):
        is_base = board.baseline is not None and r.system == board.baseline
        cells = [f'<td data-value="{rank}">{rank}</td>']
        badge = '<span class="badge">baseline</span>' if is_base else ""
        cells.append(f'<td data-value="{escape(r.system)}">{escape(r.system)}{badge}</td>')
        for m in metrics:
            v = r.metrics.get(m)
            cells.append(
                f'<td data-value="{"" if v is None else repr(v)}"{_missing(v)}>{format_metric(v)}{_sig(r, m)}</td>'
            )
        for c in costs:
            v = cost_value(r, c)
            shown = "" if v is None else escape(v) if isinstance(v, str) else repr(v)
            cells.append(f'<td data-value="{shown}"{_missing(v)}>{escape(format_cost(c, v))}</td>')
        tr = '<tr class="baseline">' if is_base else "<tr>"
        body.append(tr + "".join(cells) + "</tr>")
    table = (
        f'<table class="sortable" id="table-{ident}"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    plot = _plot(board, rows, ident)
    from retrdistill.evaluation.mining import margins_svg
    from retrdistill.validation.curve import validation_figures

    margins = margins_svg([(r.system, r.negatives) for r in rows if getattr(r, "negatives", None)], ident)
    margins = f'<figure class="margins">{margins}</figure>' if margins else ""
    return (f'<h2>{escape(title)}</h2><div class="section">{table}{plot}</div>{validation_figures(rows, ident)}'
            f"{margins}")


def _missing(value: object) -> str:
    return ' class="missing"' if value is None else ""


def _sig(row: Row | MeanRow, metric: str) -> str:
    """The marker cell part; every tested cell carries its p-values and wins/ties/losses as a tooltip."""
    sig = getattr(row, "significance", {}).get(metric)
    if sig is None:
        return '<span class="sig"></span>'
    tip = (
        f"vs {sig.baseline}: p = {sig.p_value:.3g}, corrected p = {sig.p_corrected:.3g}; "
        f"wins {sig.wins}, ties {sig.ties}, losses {sig.losses}"
    )
    return f'<span class="sig" title="{escape(tip)}">{MARKER if sig.significant else ""}</span>'


# ------------------------------------------------------------ scatter plot
@dataclass
class _Point:
    x: float
    y: float
    label: str
    base: bool


def _plot(board: Leaderboard, rows: list[Row] | list[MeanRow], ident: str) -> str:
    """The primary metric against latency (else index size), and against FLOPs/query where rows have it (the
    inverted indexes: sparse models and BM25)."""
    metric = board.primary_metric
    figures = []
    for field, label in (("ms_per_query", "query latency (ms/query)"), ("index_bytes", "index size")):
        figure = _figure(board, rows, metric, field, label, ident)
        if figure:
            figures.append(figure)
            break
    figures.append(_figure(board, rows, metric, "flops_per_query", "FLOPs per query (postings scored)",
                           f"{ident}-flops"))
    return "".join(figures)


def _figure(board: Leaderboard, rows: list[Row] | list[MeanRow], metric: str, field: str, label: str,
            ident: str) -> str:
    pts = [
        _Point(float(getattr(r, field)), r.metrics[metric], r.system, r.system == board.baseline)
        for r in rows
        if getattr(r, field, None) is not None and metric in r.metrics
    ]
    if not pts:
        return ""
    svg = scatter_svg(pts, x_label=label, y_label=metric_label(metric), x_field=field, ident=ident)
    return f"<figure>{svg}<figcaption>{escape(metric_label(metric))} against {escape(label)}</figcaption></figure>"


W, H = 600, 380
ML, MR, MT, MB = 62, 28, 20, 50


def scatter_svg(points: list[_Point], *, x_label: str, y_label: str, x_field: str, ident: str = "plot") -> str:
    """An SVG scatter plot, points labelled; x on a log scale when it spans a factor of 20 or more."""
    xs = [p.x for p in points]
    ys = [p.y for p in points]
    log_x = min(xs) > 0 and max(xs) / min(xs) >= 20
    if log_x:
        x_lo, x_hi = 10 ** math.floor(math.log10(min(xs))), 10 ** math.ceil(math.log10(max(xs)))
        fx = lambda v: math.log10(v)  # noqa: E731
        x_ticks = [10**e for e in range(round(math.log10(x_lo)), round(math.log10(x_hi)) + 1)]
    else:
        x_lo, x_hi = 0.0, (max(xs) * 1.1 if max(xs) > 0 else 1.0)
        fx = lambda v: v  # noqa: E731
        x_ticks = _nice_ticks(x_lo, x_hi)
        x_hi = max(x_hi, x_ticks[-1])
    y_pad = max((max(ys) - min(ys)) * 0.12, 0.01)
    y_ticks = _nice_ticks(max(0.0, min(ys) - y_pad), min(1.0, max(ys) + y_pad) if max(ys) <= 1 else max(ys) + y_pad)
    y_lo, y_hi = min(y_ticks[0], min(ys)), max(y_ticks[-1], max(ys))

    def px(v: float) -> float:
        return ML + (fx(v) - fx(x_lo)) / ((fx(x_hi) - fx(x_lo)) or 1.0) * (W - ML - MR)

    def py(v: float) -> float:
        return H - MB - (v - y_lo) / ((y_hi - y_lo) or 1.0) * (H - MT - MB)

    out = [
        f'<svg id="plot-{ident}" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" role="img" aria-label="{escape(y_label)} against {escape(x_label)}">'
    ]
    for t in x_ticks:
        x = px(t)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{MT}" x2="{x:.1f}" y2="{H - MB}"/>')
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{H - MB + 16}" text-anchor="middle">{escape(_tick(x_field, t))}</text>'
        )
    for t in y_ticks:
        y = py(t)
        out.append(f'<line class="grid" x1="{ML}" y1="{y:.1f}" x2="{W - MR}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<line class="axis" x1="{ML}" y1="{H - MB}" x2="{W - MR}" y2="{H - MB}"/>')
    out.append(f'<line class="axis" x1="{ML}" y1="{MT}" x2="{ML}" y2="{H - MB}"/>')
    scale = ", log scale" if log_x else ""
    out.append(f'<text x="{(ML + W - MR) / 2:.0f}" y="{H - 12}" text-anchor="middle">{escape(x_label + scale)}</text>')
    y_mid = (MT + H - MB) / 2
    out.append(f'<text transform="translate(16 {y_mid:.0f}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
    # labels avoid every point and every label placed before them
    placed = [(px(p.x) - 6, py(p.y) - 6, px(p.x) + 6, py(p.y) + 6) for p in points]
    leaders, dots, labels = [], [], []  # drawn in this order: lines under points, text on top
    for p in sorted(points, key=lambda p: (p.base, -p.y)):  # the baseline last, so it is drawn on top
        x, y = px(p.x), py(p.y)
        unit = {"ms_per_query": " ms/query", "flops_per_query": " FLOPs/query"}.get(x_field, "")
        tip = f"{p.label}: {y_label} {p.y:.4f}, {_tick(x_field, p.x)}{unit}"
        cls = "pt base" if p.base else "pt"
        dots.append(f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="5"><title>{escape(tip)}</title></circle>')
        lx, anchor, y_text = _place_label(x, y, p.label, placed)
        if abs(y_text - (y + 4)) > 0.5:  # displaced label: a leader line ties it to its point
            leaders.append(f'<line class="leader" x1="{x:.1f}" y1="{y:.1f}" x2="{lx:.1f}" y2="{y_text - 4:.1f}"/>')
        labels.append(
            f'<text class="label" x="{lx:.1f}" y="{y_text:.1f}" text-anchor="{anchor}">{escape(p.label)}</text>'
        )
    out += leaders + dots + labels
    out.append("</svg>")
    return "".join(out)


def _place_label(
    x: float, y: float, label: str, placed: list[tuple[float, float, float, float]]
) -> tuple[float, str, float]:
    """Text x, anchor and baseline y for a point's label: right of it if there is room, else left, else above."""
    width = 6.6 * len(label) + 2
    fits_right = x + 8 + width <= W - 4
    sides = ("start", "end") if fits_right else ("end", "start")
    candidates = [(side, dy) for dy in (4, -8, 16, -20, 28, -32, 40) for side in sides]
    for side, dy in candidates:
        left = x + 8 if side == "start" else x - 8 - width
        box = (left, y + dy - 11, left + width, y + dy + 3)
        if left < ML or box[2] > W - 2:
            continue
        if all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in placed):
            placed.append(box)
            return (x + 8 if side == "start" else x - 8), side, y + dy
    return (x + 8 if fits_right else x - 8), sides[0], y + 4


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo if hi > lo else 1.0
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 0.999:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _tick(field: str, value: float) -> str:
    if field == "index_bytes":
        return format_cost("index_bytes", int(value))
    if field == "flops_per_query":
        return format_cost("flops_per_query", value)
    return f"{value:g}"
