"""Stage ``select``: filter and sample the scored candidates into training groups, a ``scores`` artefact again.

Mine wide (``sampling: all``), score every candidate, then select: the registered candidate filters
(:mod:`retrdistill.filters`) run in order over each query's negatives with the teacher's scores in hand, and a
flagged negative is dropped or, with ``action: relabel``, moved to the query's positives (a likely false
negative the teacher scores like a positive). A query filter drops the whole query. ``negatives`` of the
survivors are then kept per query: the best-ranked (``top``), a seeded ``random`` sample, or ``spread`` evenly
from the top to the deepest rank.

Files: ``scores.jsonl`` (the training groups, read by ``train`` like any scores), ``selection.jsonl`` (one row
per query: kept, dropped and relabelled per filter, why a query was dropped), ``rejects.jsonl`` (with
``keep_rejects``: every dropped or relabelled candidate with its scores and the filter that flagged it). The
manifest counts what each filter flagged and the teacher-score quantiles of positives, negatives and margins
before and after selection.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrdistill import progress, registry
from retrdistill.artefacts import atomic_path, fingerprint_obj, upstream
from retrdistill.kinds import EXTRA_PASSAGES, ScoredGroup, count_rows, read_scores, scored_row
from retrdistill.parts import CandidateFilter, FilterView
from retrdistill.stages.base import StageResult, StageSpec, StepInput, Work, config_dict
from retrdistill.validate import check_ranges

log = logging.getLogger(__name__)

SAMPLINGS = ("top", "random", "spread")
ORDERS = ("miner", "teacher")
ACTIONS = ("drop", "relabel")
FILTER_KEYS = {"filter", "options", "action"}
QUANTILES = tuple(round(q, 2) for q in np.linspace(0.0, 1.0, 21))


@dataclass
class SelectConfig:
    filters: list[dict[str, Any]] = field(default_factory=list, metadata={
        "help": "Filters in order, each {filter: NAME, options: {...}, action: drop|relabel}, as YAML.",
        "part": {"kind": "filter", "name": "filter", "each": True}})
    negatives: int = field(default=8, metadata={"help": "Negatives kept per query after filtering.", "min": 1})
    sampling: str = field(default="top", metadata={
        "help": "top (best-ranked first), random (seeded) or spread (evenly from the top to the deepest rank)."})
    order: str = field(default="miner", metadata={
        "help": "Ranking that top/spread follow: the miner's ranks or the teacher's scores (highest first)."})
    min_negatives: int = field(default=1, metadata={"help": "Drop a query left with fewer negatives than this.",
                                                    "min": 0})
    keep_rejects: bool = field(default=False, metadata={"help": "Write every flagged candidate to rejects.jsonl."})
    seed: int = field(default=13, metadata={"help": "Seed of the random sampling."})

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}")
        if self.negatives < 1 or self.min_negatives < 0:
            raise ValueError("need negatives >= 1 and min_negatives >= 0")
        if not isinstance(self.filters, list):
            raise ValueError("filters must be a list of {filter: NAME, options: {...}, action: drop|relabel}")
        for i, spec in enumerate(self.filters, start=1):
            where = f"filters[{i}]"
            if not isinstance(spec, dict) or "filter" not in spec:
                raise ValueError(f"{where}: expected {{filter: NAME, options: {{...}}, action: drop|relabel}}, "
                                 f"got {spec!r}")
            unknown = set(spec) - FILTER_KEYS
            if unknown:
                raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected "
                                 f"{', '.join(sorted(FILTER_KEYS))}")
            found = registry.entry("filter", spec["filter"])
            action = spec.get("action", "drop")
            if action not in ACTIONS:
                raise ValueError(f"{where}: action must be one of {', '.join(ACTIONS)}")
            if action != "drop" and found.load().level == "query":
                raise ValueError(f"{where}: filter {spec['filter']!r} judges whole queries; its action can only "
                                 f"be 'drop'")
            if not isinstance(spec.get("options", {}), dict):
                raise ValueError(f"{where}: options must be a mapping")
        check_ranges(self, "select")


@dataclass
class ChosenFilter:
    label: str  # the name in counts ("margin", "margin#2" for a second one)
    part: CandidateFilter
    action: str


def build_filters(cfg: SelectConfig) -> list[ChosenFilter]:
    chosen: list[ChosenFilter] = []
    seen: dict[str, int] = {}
    for spec in cfg.filters:
        name = spec["filter"]
        seen[name] = seen.get(name, 0) + 1
        part = registry.build("filter", name, spec.get("options") or {})
        chosen.append(ChosenFilter(name if seen[name] == 1 else f"{name}#{seen[name]}", part,
                                   spec.get("action", "drop")))
    return chosen


def run_select(cfg: SelectConfig, scores_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> StageResult:
    return prepare_select(cfg, scores_dir, out_dir).run(force=force)


def prepare_select(cfg: SelectConfig, scores_dir: str | Path, out_dir: str | Path) -> Work:
    scores_dir = Path(scores_dir)
    scores_manifest = upstream(scores_dir, "scores")
    filters = build_filters(cfg)
    inputs = {"scores": scores_manifest.fingerprint,
              "filters": fingerprint_obj([f.part.fingerprint() for f in filters])}

    def body(tmp: Path) -> dict[str, Any]:
        positives = np.array([s for g in read_scores(scores_dir) for s in g.scores[:g.positives]], dtype=np.float64)
        for f in filters:
            f.part.fit(positives)
        tally = Tally(filters)
        bar = progress.bar(count_rows(scores_dir, "scores.jsonl"), "select", "q")
        with atomic_path(tmp / "scores.jsonl") as scores_part, open(scores_part, "w", encoding="utf-8") as out, \
                atomic_path(tmp / "selection.jsonl") as sel_part, open(sel_part, "w", encoding="utf-8") as sel, \
                atomic_path(tmp / "rejects.jsonl") as rej_part, open(rej_part, "w", encoding="utf-8") as rej:
            for group in read_scores(scores_dir):
                kept, record, rejects = select_group(group, filters, cfg)
                tally.add(group, kept, record)
                if kept is not None:
                    out.write(scored_row(kept))
                sel.write(json.dumps(record, ensure_ascii=False) + "\n")
                if cfg.keep_rejects:
                    rej.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects)
                bar.update(1)
        bar.close()
        if not cfg.keep_rejects:
            (tmp / "rejects.jsonl").unlink()
        if (scores_dir / EXTRA_PASSAGES).is_file():  # generated passages travel with the groups that use them
            shutil.copyfile(scores_dir / EXTRA_PASSAGES, tmp / EXTRA_PASSAGES)
        counts = tally.counts()
        counts["scored_by"] = scores_manifest.counts.get("scored_by", scores_manifest.settings or scores_manifest.config)
        counts["scored_by_teacher"] = scores_manifest.counts.get("scored_by_teacher",
                                                                 scores_manifest.inputs.get("teacher"))
        if counts["queries_kept"] == 0:
            raise ValueError(f"select: every query of {scores_dir} was dropped ({counts['queries_dropped']}); "
                             f"loosen the filters")
        log.info("select: kept %d of %d queries, %d negatives (%s)", counts["queries_kept"], counts["queries"],
                 counts["negatives_kept"], ", ".join(f"{k}: {v['flagged']}" for k, v in counts["filters"].items()))
        return counts

    return Work("select", "scores", Path(out_dir), config_dict(cfg), inputs, body)


def select_group(group: ScoredGroup, filters: list[ChosenFilter],
                 cfg: SelectConfig) -> tuple[ScoredGroup | None, dict[str, Any], list[dict[str, Any]]]:
    """One query's training group after the filters and the sampling (None: the query is dropped), its
    selection record and its rejected candidates."""
    p = group.positives
    neg_ids = list(group.docids[p:])
    neg_scores = np.asarray(group.scores[p:], dtype=np.float64)
    ranks = np.asarray(group.ranks if group.ranks is not None else range(1, len(neg_ids) + 1), dtype=np.int64)
    miner = np.asarray(group.miner_scores if group.miner_scores is not None else [np.nan] * len(neg_ids),
                       dtype=np.float64)
    record: dict[str, Any] = {"qid": group.qid, "candidates": len(neg_ids), "flagged": {}, "relabelled": 0,
                              "kept": 0, "dropped_query": None}
    rejects: list[dict[str, Any]] = []
    if p < 1:
        record["dropped_query"] = "no positive"
        return None, record, rejects
    pos_ids, pos_scores = list(group.docids[:p]), list(group.scores[:p])
    alive = np.ones(len(neg_ids), dtype=bool)
    for f in filters:
        idx = np.flatnonzero(alive)
        view = FilterView(group.qid, np.asarray(pos_scores, dtype=np.float64), neg_scores[idx], ranks[idx], miner[idx])
        flags = np.asarray(f.part.flag(view), dtype=bool)
        if f.part.level == "query":
            if flags.any():
                record["dropped_query"] = f.label
                return None, record, rejects
            continue
        hit = idx[flags]
        record["flagged"][f.label] = int(len(hit))
        for i in hit:
            rejects.append({"qid": group.qid, "docid": neg_ids[i], "score": float(neg_scores[i]),
                            "rank": int(ranks[i]), "miner_score": _num(miner[i]), "filter": f.label,
                            "action": f.action})
            if f.action == "relabel":
                pos_ids.append(neg_ids[i])
                pos_scores.append(float(neg_scores[i]))
        if f.action == "relabel":
            record["relabelled"] += int(len(hit))
        alive[hit] = False
    survivors = np.flatnonzero(alive)
    if len(survivors) < max(cfg.min_negatives, 1):
        record["dropped_query"] = f"fewer than {max(cfg.min_negatives, 1)} negatives left"
        return None, record, rejects
    chosen = _sample(survivors, neg_scores, ranks, cfg, group.qid)
    record["kept"] = len(chosen)
    kept = ScoredGroup(group.qid, group.query, pos_ids + [neg_ids[i] for i in chosen],
                       pos_scores + [float(neg_scores[i]) for i in chosen], len(pos_ids),
                       [int(ranks[i]) for i in chosen],
                       None if group.miner_scores is None else [float(miner[i]) for i in chosen])
    return kept, record, rejects


def _sample(survivors: np.ndarray, scores: np.ndarray, ranks: np.ndarray, cfg: SelectConfig, qid: str) -> list[int]:
    """Indices of the negatives kept, in the order of the chosen ranking (miner rank or teacher score)."""
    if cfg.order == "teacher":
        ordered = sorted(survivors.tolist(), key=lambda i: (-scores[i], ranks[i]))
    else:
        ordered = sorted(survivors.tolist(), key=lambda i: ranks[i])
    n = cfg.negatives
    if len(ordered) <= n:
        return ordered
    if cfg.sampling == "top":
        return ordered[:n]
    if cfg.sampling == "random":
        rng = random.Random(f"{cfg.seed}:{qid}")
        return [ordered[i] for i in sorted(rng.sample(range(len(ordered)), n))]
    positions = np.unique(np.round(np.linspace(0, len(ordered) - 1, n)).astype(int))
    return [ordered[i] for i in positions]


def _num(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


class Tally:
    """Counts and score distributions over every query (bounded: a seeded reservoir of scores per series)."""

    def __init__(self, filters: list[ChosenFilter]) -> None:
        self.filters = {f.label: {"flagged": 0, "action": f.action, "queries_dropped": 0} for f in filters}
        self.queries = self.kept_queries = self.candidates = self.kept_negatives = self.relabelled = 0
        self.dropped: dict[str, int] = {}
        self.series = {name: Reservoir(seed=i) for i, name in enumerate(
            ("positive", "negative_before", "negative_after", "margin_before", "margin_after"))}

    def add(self, group: ScoredGroup, kept: ScoredGroup | None, record: dict[str, Any]) -> None:
        self.queries += 1
        self.candidates += record["candidates"]
        for label, n in record["flagged"].items():
            self.filters[label]["flagged"] += n
        self.relabelled += record["relabelled"]
        reason = record["dropped_query"]
        if reason is not None:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1
            if reason in self.filters:
                self.filters[reason]["queries_dropped"] += 1
        if group.positives:
            pos = float(min(group.scores[:group.positives]))
            self.series["positive"].extend(group.scores[:group.positives])
            self.series["negative_before"].extend(group.scores[group.positives:])
            self.series["margin_before"].extend(pos - s for s in group.scores[group.positives:])
        if kept is not None:
            self.kept_queries += 1
            self.kept_negatives += len(kept.docids) - kept.positives
            pos = float(min(kept.scores[:kept.positives]))
            self.series["negative_after"].extend(kept.scores[kept.positives:])
            self.series["margin_after"].extend(pos - s for s in kept.scores[kept.positives:])

    def counts(self) -> dict[str, Any]:
        return {
            "queries": self.queries, "queries_kept": self.kept_queries,
            "queries_dropped": dict(sorted(self.dropped.items())),
            "candidates": self.candidates, "negatives_kept": self.kept_negatives,
            "negatives_per_query": round(self.kept_negatives / max(self.kept_queries, 1), 2),
            "relabelled": self.relabelled, "filters": self.filters,
            "score_quantiles": {"q": list(QUANTILES),
                                **{name: r.quantiles() for name, r in self.series.items()}},
        }


class Reservoir:
    """A uniform seeded sample of at most ``size`` values of a stream, for its quantiles in bounded memory."""

    def __init__(self, size: int = 100_000, seed: int = 0) -> None:
        self.size, self.seen, self.values = size, 0, []
        self.rng = random.Random(seed)

    def extend(self, values) -> None:
        for v in values:
            self.seen += 1
            if len(self.values) < self.size:
                self.values.append(float(v))
            else:
                j = self.rng.randrange(self.seen)
                if j < self.size:
                    self.values[j] = float(v)

    def quantiles(self) -> list[float] | None:
        if not self.values:
            return None
        return [round(float(x), 6) for x in np.quantile(np.asarray(self.values), QUANTILES)]


STAGE = StageSpec(
    name="select", config=SelectConfig, output="scores",
    inputs={"scores": StepInput(("scores",), "the scored candidates to filter and sample")},
    prepare=lambda cfg, refs, ctx: prepare_select(cfg, refs["scores"], ctx.out_dir),
    summary="candidate filters and sampling over the teacher's scores: the training groups",
)
