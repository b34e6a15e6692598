"""Stage ``rate-teachers``: estimate how well each candidate teacher suits a target corpus, without its labels,
then pick one or weight them.

    - {id: probe, stage: queries, options: {num_queries: 400, seed: 29}}
    - id: rate
      stage: rate-teachers
      queries: "@probe"
      candidates:
        - {name: bm25, teacher: bm25}
        - {name: mpnet, teacher: bi-encoder, options: {model: "offline:all-mpnet-base-v2"}}
        - {name: gemma, teacher: bi-encoder, options: {model: "offline:embeddinggemma-300m"}}
    - {id: scores, stage: score, candidates: "@neg", teacher: chosen, options: {choice: "@rate"}}

Every candidate retrieves the top ``depth`` passages of the whole corpus for each probe query (pseudo-queries
with known positives: inverse cloze or LLM-written, never the collection's judged queries). Two training-side
signals are measured per candidate:

- ``pseudo-mrr@10``: where it ranks the passage each probe query was cut from or written for;
- ``agreement@10``: the mean share of its top 10 that each other candidate's top 10 also holds, averaged over
  the other candidates (teachers that make independent errors agree most on what is right).

Inverse-cloze probes favour lexical matching (the query is a span of its passage), and agreement favours the
candidate nearest the crowd; neither alone is trusted. The **estimate** is the mean of the two signals each
standardised across the candidates (z-scores; the mean of equal weights, fixed here and not tuned). ``select:
pick`` names the candidate with the highest estimate; ``select: weights`` gives every candidate the weight
``softmax(estimate / temperature)``, drops those under ``min_weight`` and renormalises, for a weighted ensemble.
``choice.json`` records the signals, the estimates, the pick and the weights; the ``chosen`` teacher reads it.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill import progress, registry
from retrdistill.artefacts import fingerprint_obj, upstream, write_json_atomic
from retrdistill.data.beir import open_collection
from retrdistill.errors import ConfigError
from retrdistill.kinds import CHOICE_FILE, read_queries
from retrdistill.stages.base import StageResult, StageSpec, StepInput, Work, config_dict

log = logging.getLogger(__name__)
SELECTS = ("pick", "weights")
SIGNALS = ("pseudo-mrr@10", "agreement@10")


@dataclass
class RateTeachersConfig:
    candidates: list[dict[str, Any]] = field(default_factory=list, metadata={
        "help": "The candidate teachers: [{name, teacher, options}], at least two.",
        "part": {"kind": "teacher", "name": "teacher", "each": True}})
    select: str = field(default="pick", metadata={"help": "pick (the best estimate) or weights (a weighted "
                                                          "ensemble of every candidate)."})
    temperature: float = field(default=1.0, metadata={"help": "select: weights: softmax temperature over the "
                                                              "standardised estimates.", "min": 0.0,
                                                      "exclusive_min": True})
    min_weight: float = field(default=0.05, metadata={"help": "select: weights: candidates under this weight are "
                                                             "dropped before renormalising.", "min": 0.0, "max": 1.0})
    max_queries: int = field(default=500, metadata={"help": "Probe queries used at most (a seeded sample).",
                                                    "min": 1})
    seed: int = field(default=13, metadata={"help": "Seed of the probe sample."})
    depth: int = field(default=10, metadata={"help": "Passages each candidate retrieves per probe query.", "min": 10})

    def __post_init__(self) -> None:
        if not isinstance(self.candidates, list) or len(self.candidates) < 2:
            raise ConfigError("rate-teachers: candidates must list at least two teachers: "
                              "[{name: NAME, teacher: KIND, options: {...}}, ...]")
        names = []
        for i, c in enumerate(self.candidates):
            if not isinstance(c, dict) or "name" not in c or "teacher" not in c or set(c) - {"name", "teacher", "options"}:
                raise ConfigError(f"rate-teachers: candidate #{i + 1}: expected {{name, teacher, options}}, got {c!r}")
            registry.entry("teacher", c["teacher"])
            if not isinstance(c.get("options", {}), dict):
                raise ConfigError(f"rate-teachers: candidate {c['name']!r}: options must be a mapping")
            names.append(str(c["name"]))
        if len(set(names)) != len(names):
            raise ConfigError(f"rate-teachers: candidates need distinct names, got: {', '.join(names)}")
        if self.select not in SELECTS:
            raise ConfigError(f"rate-teachers: select must be one of {', '.join(SELECTS)}, got {self.select!r}")


def standardised(values: dict[str, float]) -> dict[str, float]:
    """Each value as a z-score across the candidates (0 for all where they are equal)."""
    mean = sum(values.values()) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values.values()) / len(values))
    return {k: (v - mean) / sd if sd > 1e-12 else 0.0 for k, v in values.items()}


def estimates(signals: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{candidate: estimate}``: the mean over :data:`SIGNALS` of each signal standardised across candidates."""
    z = {s: standardised({c: signals[c][s] for c in signals}) for s in SIGNALS}
    return {c: sum(z[s][c] for s in SIGNALS) / len(SIGNALS) for c in signals}


def weights_from(estimate: dict[str, float], temperature: float, min_weight: float) -> dict[str, float]:
    """Softmax of the estimates over ``temperature``; candidates under ``min_weight`` dropped, the rest renormalised
    (the best candidate is always kept)."""
    top = max(estimate.values())
    raw = {c: math.exp((e - top) / temperature) for c, e in estimate.items()}
    total = sum(raw.values())
    soft = {c: w / total for c, w in raw.items()}
    best = max(estimate, key=estimate.get)
    kept = {c: w for c, w in soft.items() if w >= min_weight or c == best}
    total = sum(kept.values())
    return {c: w / total for c, w in kept.items()}


def agreement(runs: dict[str, dict[str, list[str]]], k: int = 10) -> dict[str, float]:
    """For each candidate, the mean over the others and the probe queries of |top-k ∩ other's top-k| / k."""
    out = {}
    for name, run in runs.items():
        shares = []
        for other, other_run in runs.items():
            if other == name:
                continue
            for qid, docs in run.items():
                shares.append(len(set(docs[:k]) & set(other_run.get(qid, [])[:k])) / k)
        out[name] = sum(shares) / len(shares) if shares else 0.0
    return out


def pseudo_mrr(run: dict[str, list[str]], positives: dict[str, dict[str, int]], k: int = 10) -> float:
    values = []
    for qid, docs in run.items():
        pos = {d for d, g in positives.get(qid, {}).items() if g > 0}
        rank = next((i for i, d in enumerate(docs[:k], start=1) if d in pos), None)
        values.append(1.0 / rank if rank else 0.0)
    return sum(values) / len(values) if values else 0.0


def run_rate_teachers(cfg: RateTeachersConfig, collection_dir: str | Path, queries_dir: str | Path,
                      out_dir: str | Path, *, cache_dir: str | Path, force: bool = False) -> StageResult:
    return prepare_rate_teachers(cfg, collection_dir, queries_dir, out_dir, cache_dir=cache_dir).run(force=force)


def prepare_rate_teachers(cfg: RateTeachersConfig, collection_dir: str | Path, queries_dir: str | Path,
                          out_dir: str | Path, *, cache_dir: str | Path) -> Work:
    collection = open_collection(collection_dir, Path(cache_dir) / "corpora")
    probe_manifest = upstream(queries_dir, "queries")
    teachers = {str(c["name"]): registry.build("teacher", c["teacher"], dict(c.get("options") or {}),
                                               corpus=collection.corpus, cache_dir=Path(cache_dir))
                for c in cfg.candidates}
    inputs = {"queries": probe_manifest.fingerprint, "corpus": collection.corpus.fingerprint,
              **{f"teacher:{name}": fingerprint_obj(t.fingerprint()) for name, t in teachers.items()}}
    config = config_dict(cfg)
    config["candidates"] = [{"name": c["name"], "teacher": c["teacher"]} for c in cfg.candidates]

    def body(tmp: Path) -> dict[str, Any]:
        probe = read_queries(queries_dir)
        qids = sorted(probe.queries)
        if len(qids) > cfg.max_queries:
            qids = sorted(random.Random(cfg.seed).sample(qids, cfg.max_queries))
        if not qids:
            raise ConfigError(f"rate-teachers: {queries_dir} holds no probe queries")
        queries = {q: probe.queries[q] for q in qids}
        runs: dict[str, dict[str, list[str]]] = {}
        bar = progress.bar(len(teachers), "rate teachers", "teacher")
        for name, teacher in teachers.items():
            log.info("rate-teachers: %s retrieves for %d probe queries", name, len(queries))
            run = teacher.retrieve(queries, cfg.depth)
            runs[name] = {q: [d for d, _ in sorted(run.get(q, {}).items(), key=lambda x: -x[1])] for q in qids}
            bar.update()
        bar.close()
        agree = agreement(runs)
        signals = {name: {"pseudo-mrr@10": round(pseudo_mrr(runs[name], probe.positives), 6),
                          "agreement@10": round(agree[name], 6)} for name in teachers}
        estimate = {c: round(v, 6) for c, v in estimates(signals).items()}
        picked = max(estimate, key=estimate.get)  # the first listed on a tie
        spec = {str(c["name"]): {"teacher": c["teacher"], "options": dict(c.get("options") or {})}
                for c in cfg.candidates}
        choice: dict[str, Any] = {"select": cfg.select, "probe_queries": len(qids), "signals": signals,
                                  "estimate": estimate, "picked": picked, "candidates": spec,
                                  "ranking": sorted(estimate, key=lambda c: -estimate[c])}
        if cfg.select == "weights":
            choice["weights"] = {c: round(w, 6) for c, w in
                                 weights_from(estimate, cfg.temperature, cfg.min_weight).items()}
        write_json_atomic(tmp / CHOICE_FILE, choice)
        log.info("rate-teachers: estimates %s; picked %s", json.dumps(estimate), picked)
        return {"probe_queries": len(qids), "picked": picked, "estimate": estimate,
                **({"weights": choice["weights"]} if "weights" in choice else {})}

    return Work("rate-teachers", "teacher-choice", Path(out_dir), config, inputs, body, settings=config_dict(cfg))


STAGE = StageSpec(
    name="rate-teachers", config=RateTeachersConfig, output="teacher-choice",
    inputs={"queries": StepInput(("queries",), "probe queries with known positives (inverse cloze, LLM-written)")},
    prepare=lambda cfg, refs, ctx: prepare_rate_teachers(cfg, ctx.collection, refs["queries"], ctx.out_dir,
                                                         cache_dir=ctx.cache_dir),
    summary="label-free estimates of each candidate teacher on the target corpus; a pick or ensemble weights",
)
