"""The contract every registered part keeps, checked for each one found in the registry.

Every part of every kind in ``retrdistill.parts.KIND_BASES`` is built from its ``example_options`` (its defaults
when it declares none) with a real small collection, models and index folders as context, and:

* is an instance of its kind's base;
* has a JSON-able fingerprint, the same in a fresh Python process;
* has a fingerprint that every option changes, except the options it declares ``output_neutral``, which do not
  (each option is set in turn to another valid value: its ``example_variants`` entry, else one derived from its
  type; with its ``variant_companions`` set on both sides where it is only read with them);
* indexers keep what they built through save and load; students load a model.

A part registered later is covered without editing this file. Finally a new miner, written in a temporary
module and registered with one ``registry.add`` line, runs through the real queries and mine stages.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrdistill import registry
from retrdistill.artefacts import fingerprint_obj
from retrdistill.errors import ConfigError
from retrdistill.parts import KIND_BASES, Part

ROOT = Path(__file__).resolve().parents[1]
CASES = [pytest.param(kind, name, id=f"{kind}:{name}")
         for kind in KIND_BASES if kind in registry.REGISTRY for name in registry.names(kind)]
OTHER_MODEL = {"offline:tiny-bert-mlm": "offline:all-MiniLM-L6-v2"}  # any other model: tiny-bert-mlm
NO_VARIANT = object()
_FIXTURE = re.compile(r"\{(\w+)\}")


# ------------------------------------------------------------------ helpers
def _resolve(value: Any, request) -> Any:
    """``value`` with every ``{fixture}`` in its strings replaced by that fixture's value."""
    if isinstance(value, str):
        return _FIXTURE.sub(lambda m: str(request.getfixturevalue(m.group(1))), value)
    if isinstance(value, dict):
        return {k: _resolve(v, request) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, request) for v in value]
    return value


def _part_class(kind: str, name: str) -> type[Part]:
    return registry.entry(kind, name).load()


def _example_options(kind: str, name: str, request) -> dict[str, Any]:
    return _resolve(dict(_part_class(kind, name).example_options), request)


def _generic_variant(field: str, value: Any, hint: Any) -> Any:
    """Another valid value of an option from its type, or NO_VARIANT where the type gives none."""
    if field == "model" and isinstance(value, str):
        return OTHER_MODEL.get(value, "offline:tiny-bert-mlm")
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        for kind, other in ((int, 2), (float, 0.5), (bool, True)):
            if kind in allowed:
                return other
        return NO_VARIANT
    if type(None) in allowed:
        return None
    return NO_VARIANT


def _variants(cls: type[Part], options: Any, request) -> list[tuple[str, Any, Any]]:
    """``(option, current value, another valid value)`` for every field of ``cls.Options``."""
    hints = typing.get_type_hints(cls.Options)
    rows = []
    for f in dataclasses.fields(cls.Options):
        value = getattr(options, f.name)
        if f.name in cls.example_variants:
            other = _resolve(cls.example_variants[f.name], request)
        else:
            other = _generic_variant(f.name, value, hints.get(f.name))
        rows.append((f.name, value, other))
    return rows


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def context(small_collection, small_cache) -> dict[str, Any]:
    """What a stage hands a part: the corpus it reads and the cache folder."""
    from retrdistill.data.beir import open_collection

    return {"corpus": open_collection(small_collection, small_cache / "corpora").corpus, "cache_dir": small_cache}


_FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    from retrdistill import registry
    from retrdistill.artefacts import fingerprint_obj
    from retrdistill.data.beir import open_collection

    spec = json.load(sys.stdin)
    corpus = open_collection(spec["collection"], spec["cache"] + "/corpora").corpus
    out = {}
    for kind, name, options in spec["cases"]:
        part = registry.build(kind, name, options, corpus=corpus, cache_dir=spec["cache"])
        out[kind + ":" + name] = fingerprint_obj(part.fingerprint())
    json.dump(out, sys.stdout)
""")


@pytest.fixture(scope="module")
def fresh_fingerprints(request, small_collection, small_cache) -> dict[str, str]:
    """Every case's fingerprint computed in one fresh Python process."""
    cases = [[p.values[0], p.values[1], _example_options(*p.values, request)] for p in CASES]
    spec = {"collection": str(small_collection), "cache": str(small_cache), "cases": cases}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], input=json.dumps(spec), capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# ------------------------------------------------------------------ every part
@pytest.mark.parametrize("kind, name", CASES)
def test_part_is_its_kind_with_a_json_fingerprint(kind, name, request, context, fresh_fingerprints):
    part = registry.build(kind, name, _example_options(kind, name, request), **context)
    assert isinstance(part, KIND_BASES[kind])
    fp = part.fingerprint()
    assert json.loads(json.dumps(fp)) == fp  # JSON-able as is: no paths, arrays or objects in it
    assert fingerprint_obj(fp) == fresh_fingerprints[f"{kind}:{name}"]


@pytest.mark.parametrize("kind, name", CASES)
def test_every_output_option_changes_the_fingerprint(kind, name, request, context):
    cls = _part_class(kind, name)
    base_options = _example_options(kind, name, request)
    base = registry.build(kind, name, base_options, **context)
    before = fingerprint_obj(base.fingerprint())
    wrong = []
    for field, value, other in _variants(cls, base.options, request):
        if other is NO_VARIANT:
            wrong.append(f"{field}: no generic other value for {value!r}; declare example_variants[{field!r}]")
            continue
        assert other != value, f"{kind} {name}: the variant of {field} equals its value {value!r}"
        companions = _resolve(dict(cls.variant_companions.get(field, {})), request)
        reference = before if not companions else fingerprint_obj(
            registry.build(kind, name, {**base_options, **companions}, **context).fingerprint())
        part = registry.build(kind, name, {**base_options, **companions, field: other}, **context)
        changed = fingerprint_obj(part.fingerprint()) != reference
        if changed == (field in cls.output_neutral):
            wrong.append(f"{field}: {value!r} -> {other!r} {'changed' if changed else 'left'} the fingerprint"
                         f"{' but is output-neutral' if changed else ''}")
    assert not wrong, f"{kind} {name}: " + "; ".join(wrong)


def test_every_output_neutral_option_is_an_option():
    for p in CASES:
        cls = _part_class(*p.values)
        fields = {f.name for f in dataclasses.fields(cls.Options)}
        assert set(cls.output_neutral) <= fields, p.id
        assert set(cls.example_variants) <= fields, p.id
        assert set(cls.variant_companions) <= fields, p.id


# ------------------------------------------------------------------ parts with state
@pytest.mark.parametrize("name", registry.names("indexer"))
def test_indexer_loads_what_it_saved(name, request, context, small_collection, tmp_path):
    """Each indexer encodes ``small_collection`` with its example model (dense: all-MiniLM-L6-v2, through the
    embedding cache the index fixtures share; sparse: tiny-bert-mlm as SPLADE), saves, and loads the same index."""
    from retrdistill.data.beir import open_collection
    from retrdistill.indexers.model_check import check_model

    indexer = registry.build("indexer", name, _example_options("indexer", name, request))
    model_ref = _resolve(type(indexer).example_model, request)
    check_model(indexer, model_ref)
    build = dict(type(indexer).example_build)
    model = indexer.load_model(model_ref, max_seq_length=build.get("max_seq_length"))
    corpus = context["corpus"]
    built = indexer.index_corpus(model, corpus, tmp_path, model_ref=model_ref, cache_dir=context["cache_dir"], **build)
    assert indexer.index_bytes(tmp_path) > 0
    queries = indexer.encode_queries(model, list(open_collection(small_collection).queries.values()), built.info)
    loaded = indexer.load(tmp_path)
    want_scores, want_rows = indexer.search(built.index, queries, 20)
    scores, rows = indexer.search(loaded, queries, 20)
    assert rows.shape == (queries.shape[0], 20) and (rows >= 0).all() and rows.max() < len(corpus)
    assert np.array_equal(rows, want_rows)
    assert np.array_equal(scores, want_scores)
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    # the same index through the registry again, as Retriever.load does from index.json
    again = registry.build("indexer", name, _example_options("indexer", name, request))
    assert np.array_equal(again.search(again.load(tmp_path), queries, 20)[1], want_rows)


@pytest.mark.parametrize("name", registry.names("student"))
def test_student_loads_a_model(name, request):
    from sentence_transformers import CrossEncoder, SentenceTransformer, SparseEncoder

    model = registry.build("student", name, _example_options("student", name, request)).load()
    assert isinstance(model, (SentenceTransformer, SparseEncoder, CrossEncoder))
    if isinstance(model, CrossEncoder):  # a re-ranker: one score per (query, passage) pair
        scores = model.predict([("what is a synapse", "a synapse joins two neurons"), ("what is a synapse", "rain")])
        assert scores.shape == (2,) and np.isfinite(scores).all() and scores[0] != scores[1]
        return
    assert model.encode(["what is a synapse"]).shape == (1, model.get_embedding_dimension())


# ------------------------------------------------------------------ registry
def _module(tmp_path: Path, monkeypatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.fixture
def own_registry(monkeypatch):
    """The registry as it is, restored after the test (parts a test adds do not leak into others)."""
    for kind in list(registry.REGISTRY):
        monkeypatch.setitem(registry.REGISTRY, kind, dict(registry.REGISTRY[kind]))
    return registry.REGISTRY


def test_build_refuses_a_class_that_is_not_its_kinds_part(tmp_path, monkeypatch, own_registry):
    _module(tmp_path, monkeypatch, "duck_miner", """
        from dataclasses import dataclass

        class DuckMiner:
            @dataclass
            class Options:
                pass

            @classmethod
            def from_options(cls, options, **context):
                return cls()

            def fingerprint(self):
                return {}

            def search(self, queries, depth):
                return {}
    """)
    registry.add("miner", "duck", "duck_miner:DuckMiner", "quacks like a miner")
    with pytest.raises(ConfigError, match=r"miner 'duck': duck_miner:DuckMiner is not a retrdistill.parts.Miner"):
        registry.build("miner", "duck", {}, corpus=object(), cache_dir=tmp_path)
    monkeypatch.setitem(registry.REGISTRY, "widget", {})  # a kind without a base is not checked
    registry.add("widget", "duck", "duck_miner:DuckMiner", "any class")
    assert type(registry.build("widget", "duck")).__name__ == "DuckMiner"


def test_add_checks_target_and_name(own_registry):
    with pytest.raises(ConfigError, match="is not 'package.module:Class'"):
        registry.add("miner", "x", "no_colon", "")
    with pytest.raises(ConfigError, match="already registered as retrdistill.miners.bm25:BM25Miner"):
        registry.add("miner", "bm25", "elsewhere:Miner", "")
    with pytest.raises(ConfigError, match="unknown part kind 'gadget'"):
        registry.add("gadget", "x", "a:B", "")
    assert registry.add("miner", "bm25", "retrdistill.miners.bm25:BM25Miner", "same").target.endswith("BM25Miner")


_OVERLAP_MINER = """
    from dataclasses import dataclass

    from retrdistill.parts import Miner


    class OverlapMiner(Miner):
        '''Ranks passages by how many distinct query words they contain (ties by doc id).'''

        @dataclass
        class Options:
            min_overlap: int = 1

        needs = ("corpus",)

        def fingerprint(self):
            return {"miner": "overlap", "options": self.options_dict(), "corpus": self.corpus.fingerprint}

        def search(self, queries, depth):
            ids = self.corpus.id_list()
            docs = [set(t.lower().split()) for t in self.corpus.texts(0, len(self.corpus))]
            hits = {}
            for qid, text in queries.items():
                words = set(text.lower().split())
                scored = [(len(words & doc), d) for d, doc in zip(ids, docs)]
                scored = [(s, d) for s, d in scored if s >= self.options.min_overlap]
                hits[qid] = [(d, float(s)) for s, d in sorted(scored, key=lambda t: (-t[0], t[1]))[:depth]]
            return hits
"""


def test_a_new_miner_registered_in_one_line_runs_through_the_stages(tmp_path, monkeypatch, own_registry,
                                                                     small_collection):
    from retrdistill.data.beir import open_collection
    from retrdistill.kinds import read_candidates, read_queries
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries

    _module(tmp_path, monkeypatch, "overlap_miner", _OVERLAP_MINER)
    registry.add("miner", "overlap", "overlap_miner:OverlapMiner", "distinct query words in the passage")

    cache = tmp_path / "cache"
    run_queries(QueriesConfig(options={"num_queries": 12, "seed": 3}), small_collection, tmp_path / "queries",
                cache_dir=cache)
    cfg = MineConfig(miner="overlap", options={"min_overlap": 2}, depth=30, negatives=4, sampling="top")
    result = run_mine(cfg, small_collection, tmp_path / "queries", tmp_path / "mine", cache_dir=cache)

    miner = registry.build("miner", "overlap", {"min_overlap": 2},
                           corpus=open_collection(small_collection, cache / "corpora").corpus)
    assert type(miner).__module__ == "overlap_miner"
    assert result.manifest.inputs["miner"] == fingerprint_obj(miner.fingerprint())
    train = read_queries(tmp_path / "queries")
    groups = list(read_candidates(tmp_path / "mine"))
    assert [g.qid for g in groups] == list(train.queries)
    expected = miner.search(train.queries, 30)
    for g in groups:
        ranked = [d for d, _ in expected[g.qid] if d not in g.positives]
        assert g.negatives == ranked[:4], g.qid
    assert sum(len(g.negatives) for g in groups) > 0


# ------------------------------------------------------------------ eval systems
def test_a_model_nested_in_options_is_keyed_on_its_content(tmp_path):
    """A teacher system's model two levels down in its options: retrained at the same path, a new input."""
    from retrdistill.models import resolve_model

    path = tmp_path / "teacher-model"
    options = {"teacher": "fusion", "options": {"teacher_options": {"model": str(path)}}}
    fingerprints = []
    for source in ("offline:tiny-bert-mlm", "offline:all-MiniLM-L6-v2"):  # two models saved in turn at `path`
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(resolve_model(source), path)
        fingerprints.append(registry.build("system", "teacher", options).input_fingerprint())
    assert fingerprints[0] != fingerprints[1]


def test_fused_system_reads_earlier_outputs(small_runs, tmp_path):
    from retrdistill.evaluation.fusion import fuse_runs
    from retrdistill.evaluation.runs import read_trec_run, truncate

    fused = registry.build("system", "fusion", {"systems": ["A", "B"]})
    assert fused.combines() == ["A", "B"]
    queries = {q: "" for q in read_trec_run(small_runs / "a.trec")}
    earlier = {name: registry.build("system", "run", {"path": str(small_runs / file)}).run(
        None, queries, 5, tmp_path, False) for name, file in (("A", "a.trec"), ("B", "b.trec"))}
    assert earlier["A"].run != earlier["B"].run
    out = fused.run(None, queries, 5, tmp_path, False, earlier=earlier)
    assert out.run == truncate(fuse_runs([earlier["A"].run, earlier["B"].run], "rrf"), 5)
    assert set(out.provenance) == {"A:run_file", "B:run_file"}
    with pytest.raises(ConfigError, match="B must be evaluated before it"):
        fused.run(None, queries, 5, tmp_path, False, earlier={"A": earlier["A"]})
