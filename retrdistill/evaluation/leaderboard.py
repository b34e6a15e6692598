"""A leaderboard: one row per (system, dataset), mean rows across datasets, and its JSON / Markdown / HTML files.

The JSON is the stored form (schema: ``docs/leaderboard-schema.md``); Markdown and HTML are rendered from
it, so :func:`load_leaderboard` followed by :func:`write_markdown` or
:func:`retrdistill.evaluation.leaderboard_html.write_html` rebuilds them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from retrdistill.artefacts import write_json_atomic, write_text_atomic
from retrdistill.errors import ConfigError, DataError
from retrdistill.evaluation.compare import Comparison
from retrdistill.evaluation.metrics import EvalResult, validate_metrics

log = logging.getLogger(__name__)

FORMAT = "retrdistill-leaderboard"
# 2: rows gained query_terms, doc_terms, flops_per_query, validation; 3: backend, negatives; 4: coverage (stored),
# warnings and each row's delta (derived). Older files load.
SCHEMA_VERSION = 4
COST_FIELDS = ("backend", "encode_passages_per_s", "ms_per_query", "flops_per_query", "query_terms", "doc_terms", "index_bytes",
               "parameters")
INVERTED_COST_FIELDS = ("flops_per_query", "query_terms", "doc_terms")  # inverted indexes: sparse models, BM25
MARKER = "\u2020"  # dagger: corrected p < alpha against the baseline
TEST_NAMES = {"student": "paired Student t-test", "fisher": "Fisher randomisation test"}
CORRECTION_NAMES = {"holm": "Holm-corrected", "bonferroni": "Bonferroni-corrected", "none": "uncorrected"}
COVERAGE_LISTS = ("without_judgments", "no_relevant", "zero_for_every_system")
ID_LIMIT = 100  # ids of each coverage list the leaderboard keeps (results.json keeps them all)
SHOWN_IDS = 20  # ids of a list written out on the Markdown and HTML pages


@dataclass
class Significance:
    """One system against the baseline on one metric, on one dataset."""

    baseline: str
    test: str
    correction: str
    alpha: float
    p_value: float
    p_corrected: float
    wins: int
    ties: int
    losses: int
    correct_over: str = "systems"  # the family corrected together: "systems" (per metric) or "all"

    @property
    def significant(self) -> bool:
        return self.p_corrected < self.alpha


@dataclass
class QueryCoverage:
    """Which of a dataset's queries the means are over, which were left out, and which look broken."""

    queries: int  # in the collection's queries file
    judged: int  # with a judgment graded >= 1: the queries every mean is over (in a shard: its slice's)
    without_judgments: int = 0  # no judgment in the split's qrels: reported, not scored
    no_relevant: int = 0  # judged, but no judgment graded >= 1: excluded from the means
    zero_for_every_system: int = 0  # judged queries on which every system scores 0 on the primary metric
    judged_documents_not_in_corpus: int = 0  # qrels rows naming a passage the corpus lacks
    shard: str | None = None  # "I/N" when the means cover one shard's slice of the judged queries
    ids: dict[str, list[str]] = field(default_factory=dict)  # list -> its first ID_LIMIT ids, sorted


def query_coverage(queries: int, judged: int, lists: Mapping[str, list[str]], *,
                   judged_documents_not_in_corpus: int = 0, shard: str | None = None) -> QueryCoverage:
    """A :class:`QueryCoverage` from the full lists of ids (``COVERAGE_LISTS`` keys); it keeps their counts and
    the first :data:`ID_LIMIT` ids of each."""
    full = {name: sorted(lists.get(name) or []) for name in COVERAGE_LISTS}
    return QueryCoverage(queries=queries, judged=judged, **{name: len(v) for name, v in full.items()},
                         judged_documents_not_in_corpus=judged_documents_not_in_corpus, shard=shard,
                         ids={name: v[:ID_LIMIT] for name, v in full.items() if v})


@dataclass
class Row:
    system: str
    dataset: str
    metrics: dict[str, float]
    n_queries: int | None = None
    encode_passages_per_s: float | None = None
    ms_per_query: float | None = None
    index_bytes: int | None = None
    parameters: int | None = None
    flops_per_query: float | None = None  # postings touched per query (inverted indexes)
    query_terms: float | None = None  # mean non-zero terms per query (inverted indexes)
    doc_terms: float | None = None  # mean non-zero terms per passage (inverted indexes)
    backend: str | None = None  # the encoding backend of a system that encodes (torch, onnx, onnx-int8, ...)
    provenance: dict[str, str] = field(default_factory=dict)  # e.g. model / index / pipeline -> fingerprint
    significance: dict[str, Significance] = field(default_factory=dict)  # metric -> test against the baseline
    validation: dict[str, Any] | None = None  # a trained student's validation curve (retrdistill.validation.curve)
    negatives: dict[str, Any] | None = None  # what a trained student's negatives were (retrdistill.evaluation.mining)


@dataclass
class MeanRow:
    """A system's mean over the datasets. A metric is present only if the system has it on every dataset."""

    system: str
    datasets: list[str]
    metrics: dict[str, float]
    encode_passages_per_s: float | None = None  # mean over the system's rows, if all have it
    ms_per_query: float | None = None  # idem
    parameters: int | None = None  # when the same on every row; index size is not averaged
    flops_per_query: float | None = None  # mean over the system's rows, if all have it
    query_terms: float | None = None  # idem
    doc_terms: float | None = None  # idem
    backend: str | None = None  # when the same on every row


@dataclass
class Leaderboard:
    title: str = "retrdistill leaderboard"
    primary_metric: str = "ndcg@10"
    baseline: str | None = None
    rows: list[Row] = field(default_factory=list)
    metric_order: list[str] = field(default_factory=list)  # column order; metrics not listed follow
    coverage: dict[str, QueryCoverage] = field(default_factory=dict)  # dataset -> its queries' coverage

    def add(self, row: Row) -> Row:
        if any(r.system == row.system and r.dataset == row.dataset for r in self.rows):
            raise ValueError(f"the leaderboard already has a row for system {row.system!r} on {row.dataset!r}")
        self.rows.append(row)
        return row

    def add_result(
        self,
        system: str,
        dataset: str,
        result: EvalResult,
        *,
        encode_passages_per_s: float | None = None,
        ms_per_query: float | None = None,
        index_bytes: int | None = None,
        parameters: int | None = None,
        flops_per_query: float | None = None,
        query_terms: float | None = None,
        doc_terms: float | None = None,
        backend: str | None = None,
        provenance: Mapping[str, str] | None = None,
        validation: dict[str, Any] | None = None,
        negatives: dict[str, Any] | None = None,
    ) -> Row:
        return self.add(
            Row(
                system=system,
                dataset=dataset,
                metrics=dict(result.mean),
                n_queries=result.n_queries,
                encode_passages_per_s=encode_passages_per_s,
                ms_per_query=ms_per_query,
                index_bytes=index_bytes,
                parameters=parameters,
                flops_per_query=flops_per_query,
                query_terms=query_terms,
                doc_terms=doc_terms,
                backend=backend,
                provenance=dict(provenance or {}),
                validation=validation,
                negatives=negatives,
            )
        )

    def add_comparison(self, dataset: str, comparison: Comparison) -> None:
        """Attach a comparison's corrected p-values and win/tie/loss counts to the rows of ``dataset``."""
        if self.baseline is None:
            self.baseline = comparison.baseline
        elif self.baseline != comparison.baseline:
            raise ValueError(f"leaderboard baseline is {self.baseline!r}, comparison's is {comparison.baseline!r}")
        for system in comparison.systems:
            row = self.row(system, dataset)
            for metric in comparison.metrics:
                w, t, lo = comparison.win_tie_loss[system][metric]
                row.significance[metric] = Significance(
                    baseline=comparison.baseline,
                    test=comparison.test,
                    correction=comparison.correction,
                    alpha=comparison.alpha,
                    p_value=comparison.p_values[system][metric],
                    p_corrected=comparison.p_corrected[system][metric],
                    wins=w,
                    ties=t,
                    losses=lo,
                    correct_over=comparison.correct_over,
                )

    def row(self, system: str, dataset: str) -> Row:
        for r in self.rows:
            if r.system == system and r.dataset == dataset:
                return r
        raise KeyError(f"no row for system {system!r} on dataset {dataset!r}")

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.dataset for r in self.rows))

    def systems(self) -> list[str]:
        return list(dict.fromkeys(r.system for r in self.rows))

    def metrics(self) -> list[str]:
        """Every metric seen, primary first, then in first-seen order."""
        seen = dict.fromkeys([self.primary_metric, *self.metric_order] + [m for r in self.rows for m in r.metrics])
        return [m for m in seen if any(m in r.metrics for r in self.rows)]

    def rows_for(self, dataset: str) -> list[Row]:
        """Rows of one dataset, best primary metric first (missing last), then by system name."""
        return sorted(
            (r for r in self.rows if r.dataset == dataset),
            key=lambda r: _rank_key(r.metrics, self.primary_metric, r.system),
        )

    def baseline_row(self, dataset: str) -> Row | None:
        """The baseline's row on ``dataset`` (None without a baseline or when it has no row there)."""
        if self.baseline is None:
            return None
        return next((r for r in self.rows if r.system == self.baseline and r.dataset == dataset), None)

    def delta(self, row: Row | MeanRow, metric: str, means: list[MeanRow] | None = None) -> float | None:
        """``row``'s value of ``metric`` minus the baseline's on the same dataset (a mean row: minus the
        baseline's mean row, from ``means`` or computed); None for the baseline itself or where either lacks it."""
        if self.baseline is None or row.system == self.baseline or metric not in row.metrics:
            return None
        if isinstance(row, MeanRow):
            base = next((m for m in (means if means is not None else self.mean_rows())
                         if m.system == self.baseline), None)
        else:
            base = self.baseline_row(row.dataset)
        if base is None or metric not in base.metrics:
            return None
        return row.metrics[metric] - base.metrics[metric]

    def warnings(self) -> list[str]:
        """Every dataset's warnings (see :func:`coverage_warnings`), each naming its dataset."""
        return [f"{dataset}: {w}" for dataset, cov in self.coverage.items()
                for w in coverage_warnings(cov, self.primary_metric)]

    def mean_rows(self) -> list[MeanRow]:
        datasets = self.datasets()
        out = []
        for system in self.systems():
            rows = [r for r in self.rows if r.system == system]
            metrics = {}
            if len(rows) == len(datasets):
                for m in self.metrics():
                    if all(m in r.metrics for r in rows):
                        metrics[m] = sum(r.metrics[m] for r in rows) / len(rows)
            params = {r.parameters for r in rows}
            backends = {r.backend for r in rows}
            out.append(
                MeanRow(
                    system=system,
                    datasets=[r.dataset for r in rows],
                    metrics=metrics,
                    encode_passages_per_s=_mean_if_all([r.encode_passages_per_s for r in rows]),
                    ms_per_query=_mean_if_all([r.ms_per_query for r in rows]),
                    parameters=params.pop() if len(params) == 1 else None,
                    **{c: _mean_if_all([getattr(r, c) for r in rows]) for c in INVERTED_COST_FIELDS},
                    backend=backends.pop() if len(backends) == 1 else None,
                )
            )
        return sorted(out, key=lambda r: _rank_key(r.metrics, self.primary_metric, r.system))

    # ------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        rows = sorted(self.rows, key=lambda r: (r.dataset, r.system))
        means = self.mean_rows()
        metrics = self.metrics()

        def with_delta(r: Row | MeanRow) -> dict[str, Any]:
            deltas = {m: self.delta(r, m, means) for m in metrics}
            return {**asdict(r), "delta": {m: d for m, d in deltas.items() if d is not None}}

        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "title": self.title,
            "primary_metric": self.primary_metric,
            "baseline": self.baseline,
            "metrics": metrics,
            "datasets": self.datasets(),
            "coverage": {ds: asdict(cov) for ds, cov in sorted(self.coverage.items())},
            "warnings": self.warnings(),
            "rows": [with_delta(r) for r in rows],
            "mean": [with_delta(r) for r in means],
        }

    @classmethod
    def from_dict(cls, data: Any, path: str | Path = "<leaderboard>") -> Leaderboard:
        return _parse(data, Path(path))


def _rank_key(metrics: Mapping[str, float], primary: str, system: str) -> tuple:
    value = metrics.get(primary)
    return (value is None, -(value or 0.0), system)


def _mean_if_all(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


# ------------------------------------------------------------ reading JSON back
def load_leaderboard(path: str | Path) -> Leaderboard:
    """Rebuild a :class:`Leaderboard` from its JSON file; DataError naming the field that is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, getattr(exc, "lineno", None), f"not valid JSON ({exc})") from exc
    return _parse(data, path)


def _expect(ok: bool, path: Path, where: str, expected: str, found: Any) -> None:
    if not ok:
        raise DataError(path, None, f"{where}: expected {expected}, found {found!r}")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse(data: Any, path: Path) -> Leaderboard:
    _expect(isinstance(data, dict), path, "top level", "a JSON object", type(data).__name__)
    _expect(data.get("format") == FORMAT, path, "format", repr(FORMAT), data.get("format"))
    version = data.get("schema_version")
    _expect(
        isinstance(version, int) and 1 <= version <= SCHEMA_VERSION,
        path,
        "schema_version",
        f"an integer from 1 to {SCHEMA_VERSION} (upgrade retrdistill to read newer files)",
        version,
    )
    for key in ("title", "primary_metric"):
        _expect(isinstance(data.get(key), str), path, key, "a string", data.get(key))
    _expect(
        data.get("baseline") is None or isinstance(data.get("baseline"), str),
        path,
        "baseline",
        "a string or null",
        data.get("baseline"),
    )
    _expect(isinstance(data.get("rows"), list), path, "rows", "a list", data.get("rows"))
    order = data.get("metrics", [])
    _expect(
        isinstance(order, list) and all(isinstance(m, str) for m in order),
        path,
        "metrics",
        "a list of metric names",
        order,
    )
    board = Leaderboard(
        title=data["title"],
        primary_metric=data["primary_metric"],
        baseline=data.get("baseline"),
        metric_order=list(order),
    )
    for i, raw in enumerate(data["rows"]):
        board.add(_parse_row(raw, path, f"rows[{i}]", version))
    if version >= 4:
        coverage = data.get("coverage", {})
        _expect(isinstance(coverage, dict), path, "coverage", "an object of dataset -> coverage", coverage)
        for dataset, raw in coverage.items():
            board.coverage[dataset] = _parse_coverage(raw, path, f"coverage.{dataset}")
    # "metrics" gives the column order only; "datasets", "warnings", "mean" and the rows' "delta" are derived and
    # recomputed, not read
    return board


def _parse_coverage(raw: Any, path: Path, where: str) -> QueryCoverage:
    known = [f.name for f in fields(QueryCoverage)]
    _expect(isinstance(raw, dict) and set(raw) <= set(known) and {"queries", "judged"} <= set(raw), path, where,
            f"an object with queries, judged and optionally {known[2:]}", raw)
    for key in ("queries", "judged", *COVERAGE_LISTS, "judged_documents_not_in_corpus"):
        v = raw.get(key, 0)
        _expect(isinstance(v, int) and not isinstance(v, bool) and v >= 0, path, f"{where}.{key}",
                "a non-negative integer", v)
    shard = raw.get("shard")
    _expect(shard is None or isinstance(shard, str), path, f"{where}.shard", "a string or null", shard)
    ids = raw.get("ids", {})
    _expect(isinstance(ids, dict) and set(ids) <= set(COVERAGE_LISTS)
            and all(isinstance(v, list) and all(isinstance(q, str) for q in v) for v in ids.values()),
            path, f"{where}.ids", f"an object of {list(COVERAGE_LISTS)} -> lists of query ids", ids)
    return QueryCoverage(**{k: v for k, v in raw.items() if k != "ids"}, ids={k: list(v) for k, v in ids.items()})


def _parse_row(raw: Any, path: Path, where: str, version: int = SCHEMA_VERSION) -> Row:
    _expect(isinstance(raw, dict), path, where, "an object", raw)
    known = ({f.name for f in fields(Row)} - ({*INVERTED_COST_FIELDS, "validation"} if version < 2 else set())
             - ({"backend", "negatives"} if version < 3 else set()) | ({"delta"} if version >= 4 else set()))
    unknown = sorted(set(raw) - known)
    _expect(not unknown, path, where, f"only the fields {sorted(known)}", unknown)
    for key in ("system", "dataset"):
        _expect(
            isinstance(raw.get(key), str) and raw.get(key), path, f"{where}.{key}", "a non-empty string", raw.get(key)
        )
    metrics = raw.get("metrics")
    _expect(isinstance(metrics, dict), path, f"{where}.metrics", "an object of metric -> number", metrics)
    for m, v in metrics.items():
        _expect(_is_num(v), path, f"{where}.metrics.{m}", "a finite number", v)
    for m in metrics:
        try:
            validate_metrics([m])
        except ConfigError as exc:
            raise DataError(path, None, f"{where}.metrics: {exc}") from None
    for key in ("n_queries", "index_bytes", "parameters"):
        v = raw.get(key)
        _expect(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
            path,
            f"{where}.{key}",
            "a non-negative integer or null",
            v,
        )
    for key in ("encode_passages_per_s", "ms_per_query", *INVERTED_COST_FIELDS):
        v = raw.get(key)
        _expect(v is None or (_is_num(v) and v >= 0), path, f"{where}.{key}", "a non-negative number or null", v)
    backend = raw.get("backend")
    _expect(backend is None or (isinstance(backend, str) and backend), path, f"{where}.backend",
            "a backend name or null", backend)
    prov = raw.get("provenance", {})
    _expect(
        isinstance(prov, dict) and all(isinstance(v, str) for v in prov.values()),
        path,
        f"{where}.provenance",
        "an object of name -> fingerprint string",
        prov,
    )
    sig_raw = raw.get("significance", {})
    _expect(isinstance(sig_raw, dict), path, f"{where}.significance", "an object of metric -> test", sig_raw)
    sig = {}
    sig_fields = [f.name for f in fields(Significance)]
    for m, s in sig_raw.items():
        _expect(
            isinstance(s, dict) and sorted(s) == sorted(sig_fields),
            path,
            f"{where}.significance.{m}",
            f"an object with {sig_fields}",
            s,
        )
        sig[m] = Significance(**s)
    return Row(
        system=raw["system"],
        dataset=raw["dataset"],
        metrics={m: float(v) for m, v in metrics.items()},
        n_queries=raw.get("n_queries"),
        encode_passages_per_s=raw.get("encode_passages_per_s"),
        ms_per_query=raw.get("ms_per_query"),
        index_bytes=raw.get("index_bytes"),
        parameters=raw.get("parameters"),
        **{key: raw.get(key) for key in INVERTED_COST_FIELDS},
        backend=backend,
        provenance=dict(prov),
        significance=sig,
        validation=_parse_validation(raw.get("validation"), path, f"{where}.validation"),
        negatives=_parse_negatives(raw.get("negatives"), path, f"{where}.negatives"),
    )


def _parse_negatives(raw: Any, path: Path, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    _expect(isinstance(raw, dict) and isinstance(raw.get("stage"), str), path, where,
            "null or an object with the stage that chose the negatives", raw)
    return dict(raw)


def _parse_validation(raw: Any, path: Path, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    _expect(isinstance(raw, dict) and isinstance(raw.get("metric"), str) and isinstance(raw.get("points"), list),
            path, where, "null or an object with metric and points", raw)
    for i, point in enumerate(raw["points"]):
        _expect(isinstance(point, dict) and isinstance(point.get("step"), int) and _is_num(point.get("value")),
                path, f"{where}.points[{i}]", "an object with an integer step and a number value", point)
    best = raw.get("best_step")
    _expect(best is None or isinstance(best, int), path, f"{where}.best_step", "an integer or null", best)
    return dict(raw)


# ------------------------------------------------------------ formatting shared by Markdown and HTML
def metric_label(metric: str) -> str:
    family, _, k = metric.partition("@")
    name = {"ndcg": "nDCG", "map": "MAP", "mrr": "MRR", "recall": "R", "precision": "P"}.get(family, family)
    return f"{name}@{k}" if k else name


COST_LABELS = {
    "backend": "backend",
    "ms_per_query": "ms/query",
    "queries_per_s": "queries/s",
    "encode_passages_per_s": "passages/s",
    "index_bytes": "index",
    "parameters": "parameters",
    "flops_per_query": "FLOPs/query",
    "query_terms": "terms/query",
    "doc_terms": "terms/passage",
}


def cost_value(row: Row | MeanRow, name: str) -> Any:
    """A row's value of cost column ``name``; ``queries_per_s`` is derived from ``ms_per_query`` (one query at a
    time, so 1000 / ms), shown beside it rather than stored twice."""
    if name == "queries_per_s":
        ms = row.ms_per_query
        return None if ms is None or ms <= 0 else 1000.0 / ms
    return getattr(row, name)


def format_cost(name: str, value: float | int | None) -> str:
    if value is None:
        return "\u2014"
    if name == "queries_per_s":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"
    if name == "backend":
        return str(value)
    if name == "index_bytes":
        size = float(value)
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if size < 1024 or unit == "TiB":
                return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
            size /= 1024
    if name == "parameters":
        for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
            if value >= div:
                return f"{value / div:.1f}{unit}"
        return str(value)
    if name == "ms_per_query":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if name in ("query_terms", "doc_terms"):
        return f"{value:.1f}"
    if name == "flops_per_query":
        for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if value >= div:
                return f"{value / div:.1f}{unit}"
        return f"{value:.0f}"
    return f"{value:,.0f}"


def format_metric(value: float | None) -> str:
    return "\u2014" if value is None else f"{value:.4f}"


def format_delta(value: float | None) -> str:
    """A difference to the baseline with its sign: +0.0123, \u22120.0040, \u00b10.0000 when it rounds to nothing."""
    if value is None:
        return "\u2014"
    shown = f"{abs(value):.4f}"
    if shown == "0.0000":
        return "\u00b10.0000"
    return ("+" if value > 0 else "\u2212") + shown


def format_p(p: float | None) -> str:
    """A p-value as a reader compares it with alpha: three decimals, "<0.001" below that."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "\u2014"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_wtl(sig: Significance | None) -> str:
    return "\u2014" if sig is None else f"{sig.wins}/{sig.ties}/{sig.losses}"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _id_list(cov: QueryCoverage, name: str) -> str:
    ids = cov.ids.get(name, [])[:SHOWN_IDS]
    more = getattr(cov, name) - len(ids)
    return ", ".join(ids) + (f", \u2026 ({more:,} more in results.json)" if more > 0 else "")


def coverage_lines(cov: QueryCoverage) -> list[str]:
    """Sentences saying which queries were scored: "43 of 50 queries judged", and the ones left out, by id."""
    if cov.shard:
        lines = [f"Shard {cov.shard}: {_plural(cov.judged, 'judged query', 'judged queries')} scored, a slice of "
                 f"the split's judged queries ({_plural(cov.queries, 'query', 'queries')} in the queries file)."]
    else:
        lines = [f"{cov.judged:,} of {_plural(cov.queries, 'query', 'queries')} judged: every mean is over these "
                 f"{cov.judged:,}."]
    if cov.without_judgments:
        lines.append(f"{_plural(cov.without_judgments, 'query', 'queries')} without judgments (not scored): "
                     f"{_id_list(cov, 'without_judgments')}.")
    if cov.no_relevant:
        lines.append(f"{_plural(cov.no_relevant, 'query', 'queries')} judged with no relevant passage (not scored): "
                     f"{_id_list(cov, 'no_relevant')}.")
    return lines


def coverage_warnings(cov: QueryCoverage, metric: str) -> list[str]:
    """Signs of broken judgments: judged queries on which every system scores 0 on the primary metric."""
    z = cov.zero_for_every_system
    if not z:
        return []
    absent = (f"; the qrels judge {_plural(cov.judged_documents_not_in_corpus, 'passage', 'passages')} the corpus "
              f"lacks" if cov.judged_documents_not_in_corpus else "")
    if z == cov.judged:
        who = "the judged query scores" if z == 1 else f"all {z:,} judged queries score"
    else:
        who = f"{z:,} of the {cov.judged:,} judged queries {'scores' if z == 1 else 'score'}"
    return [f"{who} 0 on {metric_label(metric)} for every system ({_id_list(cov, 'zero_for_every_system')}): "
            f"check their judgments (a judged passage id that is not in the corpus can never be retrieved{absent})"]


def comparison_note(board: Leaderboard) -> str:
    """What the Δ, p and W/T/L columns mean, or "" without a baseline."""
    if board.baseline is None:
        return ""
    sigs = [s for r in board.rows for s in r.significance.values()]
    note = f"\u0394: the system's mean minus the baseline {board.baseline}'s, on the same queries"
    if sigs:
        s = sigs[0]
        test = TEST_NAMES.get(s.test, s.test)
        corr = CORRECTION_NAMES.get(s.correction, s.correction)
        note += (f"; p: the {corr} p-value of the two-sided {test} against the baseline; W/T/L: judged queries "
                 f"on which the system scores above / the same as / below the baseline")
    return note


def legend(board: Leaderboard) -> str:
    """The sentence explaining the significance marker, or "" when no row has a test."""
    sigs = [s for r in board.rows for s in r.significance.values()]
    if not sigs:
        return ""
    s = sigs[0]
    test = TEST_NAMES.get(s.test, s.test)
    corr = CORRECTION_NAMES.get(s.correction, s.correction)
    family = "all systems and metrics together" if s.correct_over == "all" else "across systems, per metric"
    return (
        f"{MARKER} significantly different from the baseline {s.baseline} "
        f"({test}, two-sided, {corr} p < {s.alpha:g}; corrected {family}, per dataset)"
    )


def cost_columns(rows: list[Row] | list[MeanRow]) -> list[str]:
    """Cost columns that at least one row has, in :data:`COST_FIELDS` order, queries/s after ms/query."""
    shown = [c for c in COST_FIELDS if any(getattr(r, c, None) is not None for r in rows)]
    if "ms_per_query" in shown:
        shown.insert(shown.index("ms_per_query") + 1, "queries_per_s")
    return shown


# ------------------------------------------------------------ Markdown
def section_metrics(metrics: list[str], rows: list[Row] | list[MeanRow]) -> list[str]:
    """The metrics at least one of ``rows`` has: a column every row lacks is left out."""
    return [m for m in metrics if any(m in r.metrics for r in rows)]


def render_markdown(board: Leaderboard) -> str:
    metrics = board.metrics()
    out = [f"# {_md(board.title)}", ""]
    if board.baseline:
        out += [f"Baseline: **{_md(board.baseline)}**. Rows sorted by {metric_label(board.primary_metric)}.", ""]
    if legend(board):
        out += [_md(legend(board)) + ".", ""]
    if comparison_note(board):
        out += [_md(comparison_note(board)) + ".", ""]
    datasets = board.datasets()
    if len(datasets) > 1:
        means = board.mean_rows()
        shown = section_metrics(metrics, means)
        costs = cost_columns(means)
        out += [f"## Mean over {len(datasets)} datasets", ""]
        out += _md_table(
            ["System"] + [metric_label(m) for m in shown] + [COST_LABELS[c] for c in costs],
            [
                [_md(r.system)]
                + [format_metric(r.metrics.get(m)) for m in shown]
                + [format_cost(c, cost_value(r, c)) for c in costs]
                for r in means
            ],
        )
        out += _md_against_baseline(board, means, shown, means)
    for ds in datasets:
        rows = board.rows_for(ds)
        shown = section_metrics(metrics, rows)
        costs = cost_columns(rows)
        cov = board.coverage.get(ds)
        nq = {r.n_queries for r in rows if r.n_queries is not None}
        if cov is not None and not cov.shard:
            count = f" ({cov.judged:,} of {_plural(cov.queries, 'query', 'queries')} judged)"
        else:
            count = f" ({nq.pop()} queries)" if len(nq) == 1 else ""
        out += [f"## {_md(ds)}{count}", ""]
        if cov is not None:
            out += [" ".join(_md(line) for line in coverage_lines(cov)), ""]
            out += [f"> **Warning:** {_md(w)}." for w in coverage_warnings(cov, board.primary_metric)]
            if coverage_warnings(cov, board.primary_metric):
                out += [""]
        out += _md_table(
            ["System"] + [metric_label(m) for m in shown] + [COST_LABELS[c] for c in costs],
            [
                [_md(r.system)]
                + [format_metric(r.metrics.get(m)) + _marker(r, m) for m in shown]
                + [format_cost(c, cost_value(r, c)) for c in costs]
                for r in rows
            ],
        )
        out += _md_against_baseline(board, rows, shown)
    prov = [r for r in board.rows if r.provenance]
    if prov:
        out += [
            "## Provenance",
            "",
            "Fingerprints (first 12 hex digits) of the manifests each row was produced from.",
            "",
        ]
        out += _md_table(
            ["System", "Dataset", "Fingerprints"],
            [
                [
                    _md(r.system),
                    _md(r.dataset),
                    ", ".join(f"{_md(k)} `{v[:12]}`" for k, v in sorted(r.provenance.items())),
                ]
                for r in sorted(prov, key=lambda r: (r.dataset, r.system))
            ],
            numeric=False,
        )
    return "\n".join(out).rstrip() + "\n"


def _md_against_baseline(board: Leaderboard, rows: list[Row] | list[MeanRow], metrics: list[str],
                         means: list[MeanRow] | None = None) -> list[str]:
    """The table answering "better than the baseline?": per metric Δ and, where tested, p and W/T/L."""
    others = [r for r in rows if r.system != board.baseline]
    deltas = {(r.system, m): board.delta(r, m, means) for r in others for m in metrics}
    metrics = [m for m in metrics if any(deltas[(r.system, m)] is not None for r in others)]
    if not metrics:
        return []
    tested = {m for m in metrics for r in others if getattr(r, "significance", {}).get(m) is not None}
    header = ["System"]
    for m in metrics:
        header += [f"\u0394 {metric_label(m)}"] + (["p", "W/T/L"] if m in tested else [])
    body = []
    for r in others:
        cells = [_md(r.system)]
        for m in metrics:
            sig = getattr(r, "significance", {}).get(m)
            cells.append(format_delta(deltas[(r.system, m)]) + (_marker(r, m) if sig is not None else ""))
            if m in tested:
                cells += [format_p(sig.p_corrected if sig else None), format_wtl(sig)]
        body.append(cells)
    return [f"Against the baseline {_md(board.baseline)}:", ""] + _md_table(header, body)


def _marker(row: Row | MeanRow, metric: str) -> str:
    sig = getattr(row, "significance", {}).get(metric)
    return MARKER if sig is not None and sig.significant else ""


def _md(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]], numeric: bool = True) -> list[str]:
    align = "---:" if numeric else "---"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [align] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


# ------------------------------------------------------------ writers (all atomic)
def write_json(board: Leaderboard, path: str | Path) -> None:
    write_json_atomic(path, board.to_dict())
    log.info("wrote leaderboard JSON (%d rows) to %s", len(board.rows), path)


def write_markdown(board: Leaderboard, path: str | Path) -> None:
    write_text_atomic(path, render_markdown(board))

