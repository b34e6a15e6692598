"""The leaderboard as one self-contained HTML page: sortable tables and inline SVG scatter plots.

Nothing is loaded from elsewhere: CSS and the sorting script are inline, fonts are the system's, and a
Content-Security-Policy forbids any other source, so the page works offline and from ``file://``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

from retrdistill.artefacts import write_text_atomic
from retrdistill.evaluation.leaderboard import (
    COST_LABELS,
    MARKER,
    Leaderboard,
    MeanRow,
    Row,
    comparison_note,
    cost_columns,
    cost_value,
    coverage_lines,
    coverage_warnings,
    format_cost,
    format_delta,
    format_metric,
    format_p,
    format_wtl,
    legend,
    metric_label,
    section_metrics,
)

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px auto;
max-width:1360px;padding:0 16px;color:#1d232b;background:#fff}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2e8;padding-bottom:4px}
p.note{color:#4a5563;margin:4px 0}
p.warning{color:#7a1d12;background:#fdeceb;border:1px solid #f0b4ae;border-radius:4px;padding:6px 10px;margin:6px 0}
.section{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start}
.table-wrap{max-width:100%;min-width:0;overflow-x:auto}
table.sortable,table.against{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:13px}
th,td{padding:4px 6px;border-bottom:1px solid #e6e9ee;text-align:right;white-space:nowrap}
th{white-space:normal;vertical-align:bottom}
th:nth-child(2),td:nth-child(2){text-align:left;white-space:normal;min-width:9em;max-width:22em}
table.against th:first-child,table.against td:first-child{text-align:left;white-space:normal;max-width:22em}
table.sortable th{background:#f3f5f8;cursor:pointer;user-select:none;position:relative}
table.against th{background:#f3f5f8}
table.sortable th:hover{background:#e6ebf2}th:focus{outline:2px solid #3b73c4;outline-offset:-2px}
th[aria-sort=ascending],th[aria-sort=descending]{padding-right:14px}
th[aria-sort=ascending]::after{content:"\\25B2";position:absolute;right:4px;font-size:9px;bottom:7px}
th[aria-sort=descending]::after{content:"\\25BC";position:absolute;right:4px;font-size:9px;bottom:7px}
th.delta,td.delta{border-left:1px solid #dde2e8}
td.up{color:#1a6b2f}td.down{color:#b42318}
tr.baseline td{background:#fbf7e9}
.badge{font-size:11px;color:#7a5d00;border:1px solid #d8c06b;border-radius:3px;padding:0 4px;margin-left:6px}
.sig{display:inline-block;width:.8em;text-align:left;color:#b42318;font-weight:600;cursor:help}
td.missing{color:#9aa3ad}
details{margin:8px 0}summary{cursor:pointer;color:#2a5ea8}
figure{margin:0;max-width:100%}figcaption{font-size:12px;color:#4a5563;text-align:center}
svg{max-width:100%;height:auto}
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
    if comparison_note(board):
        parts.append(f'<p class="note">{escape(comparison_note(board))}.</p>')
    datasets = board.datasets()
    if len(datasets) > 1:
        means = board.mean_rows()
        parts.append(_section(board, f"Mean over {len(datasets)} datasets", "mean", means, metrics, means=means))
    for i, ds in enumerate(datasets):
        rows = board.rows_for(ds)
        cov = board.coverage.get(ds)
        nq = {r.n_queries for r in rows if r.n_queries is not None}
        if cov is not None and not cov.shard:
            title = f"{ds} ({cov.judged:,} of {cov.queries:,} queries judged)"
        else:
            title = ds + (f" ({nq.pop()} queries)" if len(nq) == 1 else "")
        notes = ""
        if cov is not None:
            notes = "".join(f'<p class="note coverage">{escape(line)}</p>' for line in coverage_lines(cov))
            notes += "".join(f'<p class="warning" role="alert"><b>Warning:</b> {escape(w)}.</p>'
                             for w in coverage_warnings(cov, board.primary_metric))
        parts.append(_section(board, title, f"ds{i}", rows, metrics, notes=notes))
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts) + "\n"


def _delta_class(value: float | None) -> str:
    shown = format_delta(value)
    return "delta missing" if value is None else {"+": "delta up", "\u2212": "delta down"}.get(shown[0], "delta")


def _section(board: Leaderboard, title: str, ident: str, rows: list[Row] | list[MeanRow], metrics: list[str], *,
             notes: str = "", means: list[MeanRow] | None = None) -> str:
    metrics = section_metrics(metrics, rows)
    costs = cost_columns(rows)
    primary = board.primary_metric
    deltas = {r.system: board.delta(r, primary, means) for r in rows}
    show_delta = any(d is not None for d in deltas.values())
    sigs = {r.system: getattr(r, "significance", {}).get(primary) for r in rows}
    show_test = show_delta and any(s is not None for s in sigs.values())
    head = ['<th data-type="num" aria-sort="none">#</th>', '<th data-type="text" aria-sort="none">System</th>']
    for m in metrics:
        head.append(f'<th data-type="num" aria-sort="none">{escape(metric_label(m))}</th>')
        if m == primary and show_delta:
            head.append(f'<th class="delta" data-type="num" aria-sort="none" title="minus the baseline '
                        f'{escape(board.baseline or "")}">\u0394\u00a0{escape(metric_label(m))}</th>')
            if show_test:
                head.append('<th data-type="num" aria-sort="none" title="corrected p-value against the baseline">'
                            'p</th>')
                head.append('<th data-type="num" aria-sort="none" title="judged queries: wins/ties/losses against '
                            'the baseline">W/T/L</th>')
    head += [f'<th data-type="{"text" if c == "backend" else "num"}" aria-sort="none">{_breakable(COST_LABELS[c])}</th>'
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
                f'<td data-value="{"" if v is None else repr(v)}"{_missing(v)}>{format_metric(v)}'
                f"{_sig(r, m, board.delta(r, m, means))}</td>"
            )
            if m == primary and show_delta:
                d, sig = deltas[r.system], sigs[r.system]
                cells.append(f'<td class="{_delta_class(d)}" data-value="{"" if d is None else repr(d)}">'
                             f"{format_delta(d)}</td>")
                if show_test:
                    p = None if sig is None else sig.p_corrected
                    cells.append(f'<td data-value="{"" if p is None else repr(p)}"{_missing(p)}'
                                 f'{_p_title(sig)}>{format_p(p)}</td>')
                    net = "" if sig is None else str(sig.wins - sig.losses)
                    cells.append(f'<td data-value="{net}"{_missing(sig)}>{format_wtl(sig)}</td>')
        for c in costs:
            v = cost_value(r, c)
            shown = "" if v is None else escape(v) if isinstance(v, str) else repr(v)
            cells.append(f'<td data-value="{shown}"{_missing(v)}>{escape(format_cost(c, v))}</td>')
        tr = '<tr class="baseline">' if is_base else "<tr>"
        body.append(tr + "".join(cells) + "</tr>")
    table = (
        f'<div class="table-wrap" id="wrap-{ident}"><table class="sortable" id="table-{ident}">'
        f'<thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )
    plot = _plot(board, rows, ident)
    from retrdistill.evaluation.mining import margins_svg

    margins = margins_svg([(r.system, r.negatives) for r in rows if getattr(r, "negatives", None)], ident)
    margins = f'<figure class="margins">{margins}</figure>' if margins else ""
    return (f"<h2>{escape(title)}</h2>{notes}<div class=\"section\">{table}{plot}</div>"
            f"{_against_baseline(board, rows, metrics, ident, means)}{validation_figures(rows, ident)}{margins}")


def _breakable(label: str) -> str:
    """A header that may wrap after its slashes ("passages/s", "FLOPs/query"), so narrow columns stay narrow."""
    return "/<wbr>".join(escape(part) for part in label.split("/"))


def _against_baseline(board: Leaderboard, rows: list[Row] | list[MeanRow], metrics: list[str], ident: str,
                      means: list[MeanRow] | None) -> str:
    """Every metric against the baseline (Δ, and p and W/T/L where tested), folded under the table."""
    others = [r for r in rows if r.system != board.baseline]
    deltas = {(r.system, m): board.delta(r, m, means) for r in others for m in metrics}
    metrics = [m for m in metrics if any(deltas[(r.system, m)] is not None for r in others)]
    if len(metrics) < 2:  # the primary metric alone: the table above has it
        return ""
    tested = {m for m in metrics for r in others if getattr(r, "significance", {}).get(m) is not None}
    head = ["<th>System</th>"]
    for m in metrics:
        head.append(f'<th class="delta">\u0394\u00a0{escape(metric_label(m))}</th>')
        if m in tested:
            head += ["<th>p</th>", "<th>W/T/L</th>"]
    body = []
    for r in others:
        cells = [f"<td>{escape(r.system)}</td>"]
        for m in metrics:
            d = deltas[(r.system, m)]
            sig = getattr(r, "significance", {}).get(m)
            cells.append(f'<td class="{_delta_class(d)}">{format_delta(d)}</td>')
            if m in tested:
                p = None if sig is None else sig.p_corrected
                cells.append(f"<td{_missing(p)}{_p_title(sig)}>{format_p(p)}</td>")
                cells.append(f"<td{_missing(sig)}>{format_wtl(sig)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<details id="against-{ident}"><summary>Every metric against the baseline '
            f'{escape(board.baseline or "")}</summary><div class="table-wrap"><table class="against" id="vs-{ident}">'
            f'<thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(body)}</tbody></table></div></details>')


# ------------------------------------------------------------ validation curves
CW, CH = 240, 120
CML, CMR, CMT, CMB = 40, 10, 12, 26


def validation_figures(rows: list, ident: str) -> str:
    """One small figure per row that carries a validation curve of at least 2 points (none: the empty string)."""
    figures = []
    for i, row in enumerate(rows):
        validation = getattr(row, "validation", None)
        if not validation or len(validation.get("points") or []) < 2:
            continue
        caption = f"{row.system}: validation {validation['metric']} (kept: step {validation.get('best_step')})"
        figures.append(f'<figure class="curve">{curve_svg(validation, row.system, f"{ident}-{i}")}'
                       f"<figcaption>{escape(caption)}</figcaption></figure>")
    if not figures:
        return ""
    return ('<div class="curves" style="display:flex;flex-wrap:wrap;gap:12px;margin-top:8px">'
            + "".join(figures) + "</div>")


def curve_svg(validation: dict, label: str, ident: str) -> str:
    """A small SVG line chart of ``validation["points"]`` (value against step) on a value axis from 0
    (:func:`value_ticks`), the kept checkpoint ringed."""
    points = validation["points"]
    xs = [p["step"] for p in points]
    ys = [p["value"] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    ticks = value_ticks(ys)
    y_lo, y_hi = ticks[0], ticks[-1]

    def px(v: float) -> float:
        return CML + (v - x_lo) / ((x_hi - x_lo) or 1.0) * (CW - CML - CMR)

    def py(v: float) -> float:
        return CH - CMB - (v - y_lo) / ((y_hi - y_lo) or 1.0) * (CH - CMT - CMB)

    metric = validation["metric"]
    out = [f'<svg id="curve-{escape(ident)}" class="curve" width="{CW}" height="{CH}" viewBox="0 0 {CW} {CH}" '
           f'role="img" aria-label="{escape(label)}: validation {escape(metric)} by training step">']
    out.append(f'<line x1="{CML}" y1="{CH - CMB}" x2="{CW - CMR}" y2="{CH - CMB}" stroke="#8b95a1"/>')
    out.append(f'<line x1="{CML}" y1="{CMT}" x2="{CML}" y2="{CH - CMB}" stroke="#8b95a1"/>')
    for v in (y_lo, y_hi):
        out.append(f'<text x="{CML - 4}" y="{py(v) + 4:.1f}" text-anchor="end" font-size="10">{v:g}</text>')
    for v in sorted({x_lo, x_hi}):
        out.append(f'<text x="{px(v):.1f}" y="{CH - CMB + 12}" text-anchor="middle" font-size="10">{v}</text>')
    out.append(f'<text x="{(CML + CW - CMR) / 2:.0f}" y="{CH - 3}" text-anchor="middle" font-size="10">step</text>')
    path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    out.append(f'<polyline points="{path}" fill="none" stroke="#3b73c4" stroke-width="1.5"/>')
    for p in points:
        kept = p["step"] == validation.get("best_step")
        epoch = f", epoch {p['epoch']:g}" if isinstance(p.get("epoch"), (int, float)) else ""
        tip = f"step {p['step']}{epoch}: {metric} {p['value']:.4f}" + (" (kept)" if kept else "")
        fill = "#d08a00" if kept else "#3b73c4"
        radius = 4.5 if kept else 2.5
        out.append(f'<circle cx="{px(p["step"]):.1f}" cy="{py(p["value"]):.1f}" r="{radius}" fill="{fill}">'
                   f"<title>{escape(tip)}</title></circle>")
    out.append("</svg>")
    return "".join(out)


def _missing(value: object) -> str:
    return ' class="missing"' if value is None else ""


def _p_title(sig) -> str:
    if sig is None:
        return ""
    return f' title="{escape(f"uncorrected p = {sig.p_value:.3g}, corrected p = {sig.p_corrected:.3g}")}"'


def _sig(row: Row | MeanRow, metric: str, delta: float | None = None) -> str:
    """The marker cell part; every tested cell carries its Δ, p-values and wins/ties/losses as a tooltip."""
    sig = getattr(row, "significance", {}).get(metric)
    if sig is None:
        return '<span class="sig"></span>'
    tip = (
        f"vs {sig.baseline}: \u0394 {format_delta(delta)}, p = {sig.p_value:.3g}, corrected p = "
        f"{sig.p_corrected:.3g}; wins {sig.wins}, ties {sig.ties}, losses {sig.losses}"
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
    if len(pts) < 2:  # one point is no comparison: no chart
        return ""
    svg = scatter_svg(pts, x_label=label, y_label=metric_label(metric), x_field=field, ident=ident)
    return f"<figure>{svg}<figcaption>{escape(metric_label(metric))} against {escape(label)}</figcaption></figure>"


W, H = 600, 380
ML, MR, MT, MB = 62, 28, 20, 50


def scatter_svg(points: list[_Point], *, x_label: str, y_label: str, x_field: str, ident: str = "plot") -> str:
    """An SVG scatter plot, points labelled; x on a log scale when it spans a factor of 20 or more, y from 0
    (:func:`value_ticks`)."""
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
    y_ticks = value_ticks(ys)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]

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


def value_ticks(values: list[float], n: int = 5) -> list[float]:
    """Ticks of an axis for metric values that does not exaggerate their differences: it starts at 0 (or below,
    for negative values) rather than just under the smallest value; values within [0, 1] get the whole 0-1 axis
    when one is above 0.5, else an axis from 0 to a round number above them (nDCG 0.72 to 0.82: 0 to 1; 0.06 to
    0.08: 0 to 0.1, never 0.06 to 0.08)."""
    lo, hi = min(0.0, *values), max(0.0, *values)
    if hi - lo <= 0:
        return [0.0, 1.0]
    if 0.0 <= min(values) and 0.5 < max(values) <= 1.0:
        return [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ticks = _nice_ticks(lo, hi * 1.04 if hi > 0 else hi, n)
    if 0.0 <= min(values) and max(values) <= 1.0:
        ticks = [t for t in ticks if t <= 1.0] or [0.0, 1.0]
    while ticks[-1] < hi:  # the top tick above every value
        ticks.append(round(ticks[-1] + (ticks[1] - ticks[0]), 10))
    return ticks


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


def write_html(board: Leaderboard, path: str | Path) -> None:
    """The page of ``board`` (:func:`render_html`), written atomically."""
    write_text_atomic(path, render_html(board))
