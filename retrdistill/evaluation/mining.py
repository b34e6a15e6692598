"""Mining statistics: what each student's negatives were, how the filters thinned them, how miners overlap.

* :func:`negatives_record` — the summary a train step records (``counts.negatives``) of the scores artefact it
  trained on: for a ``select`` step, negatives per query, what each filter flagged, queries dropped, and the
  quantiles of the teacher's margin (positive − negative) before and after selection.
* :func:`student_negatives` — that record for a student's model folder, as a leaderboard row carries it.
* :func:`mining_report` — any candidates / scores / select folders side by side, with the pairwise overlap of
  their negatives (mean Jaccard per shared query), as JSON (``retrdistill mining-report``).
* :func:`margins_svg` — the leaderboard page's small figure: one box per trained row, the distribution of the
  teacher's margins over its training negatives.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from retrdistill.artefacts import read_manifest
from retrdistill.errors import ManifestError

QUANTILE_KEYS = ("q", "positive", "negative_before", "negative_after", "margin_before", "margin_after")


def negatives_record(manifest) -> dict[str, Any]:
    """The negatives summary of a scores artefact's manifest (a select step's carries its statistics)."""
    counts = manifest.counts
    record: dict[str, Any] = {"step": manifest.step, "stage": manifest.stage}
    if manifest.stage != "select":
        return record
    quantiles = counts.get("score_quantiles") or {}
    record.update({
        "queries": counts.get("queries"), "queries_kept": counts.get("queries_kept"),
        "negatives_per_query": counts.get("negatives_per_query"), "relabelled": counts.get("relabelled"),
        "flagged": {label: f["flagged"] for label, f in (counts.get("filters") or {}).items()},
        "queries_dropped": counts.get("queries_dropped") or {},
        "margin_quantiles": {"q": quantiles.get("q"), "before": quantiles.get("margin_before"),
                             "after": quantiles.get("margin_after")},
    })
    return record


def student_negatives(model: str | Path | None) -> dict[str, Any] | None:
    """``counts.negatives`` of the student artefact whose ``model/`` folder is ``model``; None otherwise."""
    if not model or str(model).startswith("offline:"):
        return None
    folder = Path(model)
    try:
        manifest = read_manifest(folder.parent) if folder.is_dir() else None
    except ManifestError:
        return None
    if manifest is None or manifest.kind != "student":
        return None
    record = manifest.counts.get("negatives")
    return dict(record) if isinstance(record, dict) else None


# ------------------------------------------------------------------ report over several artefacts
def _negatives_by_query(folder: Path, kind: str) -> dict[str, set[str]]:
    from retrdistill.kinds import read_candidates, read_scores

    if kind == "candidates":
        return {g.qid: set(g.negatives) for g in read_candidates(folder)}
    return {g.qid: set(g.docids[g.positives:]) for g in read_scores(folder)}


def mining_report(folders: dict[str, Path]) -> dict[str, Any]:
    """Name -> candidates, scores or select folder, reported side by side: per artefact its counts (negatives
    per query; for select steps what each filter flagged and the teacher-score quantiles), and for each pair the
    mean Jaccard overlap of their negatives over the queries both hold."""
    negatives: dict[str, dict[str, set[str]]] = {}
    artefacts: dict[str, Any] = {}
    for name, folder in folders.items():
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest is None or manifest.kind not in ("candidates", "scores"):
            raise ManifestError(f"{folder}: not a finished candidates or scores artefact")
        negatives[name] = _negatives_by_query(folder, manifest.kind)
        sizes = [len(v) for v in negatives[name].values()]
        entry: dict[str, Any] = {"kind": manifest.kind, "stage": manifest.stage, "step": manifest.step}
        if manifest.stage == "select":  # what it was given and what its filters did
            entry.update({k: v for k, v in negatives_record(manifest).items() if k not in ("step", "stage")})
            entry["queries_in"] = entry.pop("queries")
        entry.update({"queries": len(sizes), "negatives_per_query": round(sum(sizes) / max(len(sizes), 1), 2)})
        artefacts[name] = entry
    overlap: dict[str, dict[str, float | None]] = {}
    names = list(folders)
    for i, a in enumerate(names):
        overlap[a] = {}
        for b in names:
            shared = set(negatives[a]) & set(negatives[b])
            scores = [len(negatives[a][q] & negatives[b][q]) / len(negatives[a][q] | negatives[b][q])
                      for q in shared if negatives[a][q] | negatives[b][q]]
            overlap[a][b] = round(sum(scores) / len(scores), 4) if scores else None
    return {"artefacts": artefacts, "overlap_jaccard": overlap}


# ------------------------------------------------------------------ leaderboard figure
W, ROW_H, ML, MR, MT = 420, 22, 170, 16, 22


def margins_svg(rows: list[tuple[str, dict[str, Any]]], ident: str) -> str:
    """Horizontal box plots (5-25-50-75-95 %) of the teacher's margin over each row's training negatives."""
    boxes = []
    for label, record in rows:
        mq = (record or {}).get("margin_quantiles") or {}
        q, after = mq.get("q"), mq.get("after")
        if not q or not after:
            continue
        at = dict(zip(q, after))
        try:
            boxes.append((label, [at[k] for k in (0.05, 0.25, 0.5, 0.75, 0.95)]))
        except KeyError:
            continue
    if not boxes:
        return ""
    # the axis spans 0 too: a margin's sign matters (below 0 the teacher ranks the negative above the positive),
    # and an axis cut to the boxes alone would make small spreads look wide
    lo = min(0.0, *(b[1][0] for b in boxes))
    hi = max(0.0, *(b[1][-1] for b in boxes))
    span = (hi - lo) or 1.0

    def px(v: float) -> float:
        return ML + (v - lo) / span * (W - ML - MR)

    height = MT + ROW_H * len(boxes) + 24
    out = [f'<svg id="margins-{escape(ident)}" class="margins" width="{W}" height="{height}" '
           f'viewBox="0 0 {W} {height}" role="img" aria-label="teacher margin of the training negatives">',
           f'<text x="{ML}" y="14" font-size="11">teacher margin (positive − negative) of the training negatives</text>']
    for i, (label, (p5, p25, p50, p75, p95)) in enumerate(boxes):
        y = MT + i * ROW_H + ROW_H / 2
        out.append(f'<text x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{escape(label)}</text>')
        out.append(f'<line x1="{px(p5):.1f}" y1="{y:.1f}" x2="{px(p95):.1f}" y2="{y:.1f}" stroke="#8b95a1"/>')
        out.append(f'<rect x="{px(p25):.1f}" y="{y - 6:.1f}" width="{max(px(p75) - px(p25), 1):.1f}" height="12" '
                   f'fill="#cfe0f5" stroke="#3b73c4"/>')
        out.append(f'<line x1="{px(p50):.1f}" y1="{y - 6:.1f}" x2="{px(p50):.1f}" y2="{y + 6:.1f}" '
                   f'stroke="#1d3f73" stroke-width="2"/>')
    base = MT + ROW_H * len(boxes) + 4
    out.append(f'<line x1="{ML}" y1="{base}" x2="{W - MR}" y2="{base}" stroke="#8b95a1"/>')
    if lo < 0 < hi:
        out.append(f'<line x1="{px(0):.1f}" y1="{MT}" x2="{px(0):.1f}" y2="{base}" stroke="#c9ced6" '
                   f'stroke-dasharray="3 3"/>')
    ticks = [lo, hi] + ([0.0] if min(abs(px(0) - px(lo)), abs(px(hi) - px(0))) >= 30 else [])
    for v in sorted(set(ticks)):
        out.append(f'<text x="{px(v):.1f}" y="{base + 14}" text-anchor="middle" font-size="10">{v:.3g}</text>')
    out.append("</svg>")
    return "".join(out)
