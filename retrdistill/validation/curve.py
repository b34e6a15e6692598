"""A trained student's validation curve as the leaderboard carries it, and its small inline SVG figure.

A leaderboard row's ``validation`` (``docs/leaderboard-schema.md``)::

    {"metric": "pseudo-mrr@10", "student": "minilm-l3", "best_step": 250,
     "points": [{"step": 125, "epoch": 1.0, "value": 0.61}, {"step": 250, "epoch": 2.0, "value": 0.64}]}
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from retrdistill.artefacts import read_manifest


def student_validation(model: str | Path | None) -> dict[str, Any] | None:
    """The curve recorded by the student artefact whose ``model/`` folder is ``model`` (a train or pick step's),
    in the leaderboard's form; None for anything else (a hub name, a folder without a student manifest, a
    student trained without validation)."""
    if not model or str(model).startswith("offline:"):
        return None
    folder = Path(model)
    try:
        manifest = read_manifest(folder.parent) if folder.is_dir() else None
    except Exception:  # noqa: BLE001 - a foreign folder beside the model is not ours to judge here
        return None
    if manifest is None or manifest.kind != "student":
        return None
    return leaderboard_validation(manifest.counts.get("validation"), manifest.step or folder.parent.name)


def leaderboard_validation(record: Any, student: str) -> dict[str, Any] | None:
    """A manifest's ``counts.validation`` reduced to the chosen metric's points (None if there is none)."""
    if not isinstance(record, dict) or not record.get("curve"):
        return None
    metric = record["metric"]
    points = []
    for p in record["curve"]:
        values = {k.removeprefix("eval_"): v for k, v in p["metrics"].items()}
        if metric in values:
            points.append({"step": int(p["step"]), "epoch": p.get("epoch"), "value": float(values[metric])})
    best = (record.get("best") or {}).get("step")
    return {"metric": metric, "student": student, "best_step": best, "points": points}


W, H = 240, 120
ML, MR, MT, MB = 40, 10, 12, 26


def curve_svg(validation: dict[str, Any], label: str, ident: str) -> str:
    """A small SVG line chart of ``validation["points"]`` (value against step), the kept checkpoint ringed."""
    points = validation["points"]
    xs = [p["step"] for p in points]
    ys = [p["value"] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    pad = max((y_hi - y_lo) * 0.15, 0.005)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def px(v: float) -> float:
        return ML + (v - x_lo) / ((x_hi - x_lo) or 1.0) * (W - ML - MR)

    def py(v: float) -> float:
        return H - MB - (v - y_lo) / ((y_hi - y_lo) or 1.0) * (H - MT - MB)

    metric = validation["metric"]
    out = [f'<svg id="curve-{escape(ident)}" class="curve" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="{escape(label)}: validation {escape(metric)} by training step">']
    out.append(f'<line x1="{ML}" y1="{H - MB}" x2="{W - MR}" y2="{H - MB}" stroke="#8b95a1"/>')
    out.append(f'<line x1="{ML}" y1="{MT}" x2="{ML}" y2="{H - MB}" stroke="#8b95a1"/>')
    for v in (min(ys), max(ys)):
        out.append(f'<text x="{ML - 4}" y="{py(v) + 4:.1f}" text-anchor="end" font-size="10">{_fmt(v)}</text>')
    for v in sorted({x_lo, x_hi}):
        out.append(f'<text x="{px(v):.1f}" y="{H - MB + 12}" text-anchor="middle" font-size="10">{v}</text>')
    out.append(f'<text x="{(ML + W - MR) / 2:.0f}" y="{H - 3}" text-anchor="middle" font-size="10">step</text>')
    path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    out.append(f'<polyline points="{path}" fill="none" stroke="#3b73c4" stroke-width="1.5"/>')
    for p in points:
        kept = p["step"] == validation.get("best_step")
        epoch = f", epoch {p['epoch']:g}" if isinstance(p.get("epoch"), (int, float)) else ""
        tip = f"step {p['step']}{epoch}: {metric} {p['value']:.4f}" + (" (kept)" if kept else "")
        fill = "#d08a00" if kept else "#3b73c4"
        radius = 4.5 if kept else 2.5
        out.append(f'<circle cx="{px(p["step"]):.1f}" cy="{py(p["value"]):.1f}" r="{radius}" fill="{fill}">'
                   f'<title>{escape(tip)}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def validation_figures(rows: list, ident: str) -> str:
    """One small figure per row that carries a validation curve (none: the empty string)."""
    figures = []
    for i, row in enumerate(rows):
        validation = getattr(row, "validation", None)
        if not validation or not validation.get("points"):
            continue
        caption = f"{row.system}: validation {validation['metric']} (kept: step {validation.get('best_step')})"
        figures.append(f'<figure class="curve">{curve_svg(validation, row.system, f"{ident}-{i}")}'
                       f"<figcaption>{escape(caption)}</figcaption></figure>")
    if not figures:
        return ""
    return ('<div class="curves" style="display:flex;flex-wrap:wrap;gap:12px;margin-top:8px">'
            + "".join(figures) + "</div>")


def _fmt(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "?"
