"""Sharded eval steps: every system (BM25, a TREC run file, fusions of both, a dense model) runs on a contiguous
slice of the judged queries per shard, and the merge (concatenated runs, metrics, significance tests and the
leaderboard over all queries) equals the unsharded eval; refusals; ``shards: N`` on a pipeline's eval step."""

from __future__ import annotations

import json
import random

import pytest

from retrdistill.errors import ConfigError, ManifestError


def _run_file(small_collection, path) -> str:
    """A TREC run from "another tool": for each test query its judged passages and others, seeded scores."""
    qrels = [line.split("\t") for line in (small_collection / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    docs = sorted({json.loads(line)["_id"] for line in
                   (small_collection / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:60]})
    rng = random.Random(3)
    lines = []
    for qid in sorted({r[0] for r in qrels}):
        judged = [r[1] for r in qrels if r[0] == qid]
        for rank, doc in enumerate(dict.fromkeys(rng.sample(judged, len(judged) // 2) + rng.sample(docs, 20)), 1):
            lines.append(f"{qid} Q0 {doc} {rank} {30 - rank + rng.random():.4f} other\n")
    path.write_text("".join(lines))
    return str(path)


def _systems(run_path: str, dense: str | None = None) -> list[dict]:
    systems = [{"name": "BM25", "type": "bm25"}, {"name": "other tool", "type": "run", "options": {"path": run_path}},
               {"name": "rrf", "type": "fusion", "options": {"systems": ["BM25", "other tool"]}},
               {"name": "combsum", "type": "fusion", "options": {"systems": ["BM25", "other tool"],
                                                                 "method": "combsum"}}]
    if dense:
        systems.append({"name": "dense", "type": "dense", "options": {"model": dense}})
    return systems


def _trec(path) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    for line in path.read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        out.setdefault(qid, []).append((doc, float(score)))
    return out


def _assert_same_eval(merged, whole, encoded: tuple[str, ...] = ()) -> None:
    """Byte-identical runs and identical metrics, except for the systems in ``encoded`` (which encode their
    queries): a shard encodes its queries in other batches, and with more than one torch thread their floats may
    differ in the last bits, so for those the ranking (top 10 per query) must be the same and the scores within
    1e-5, and the metrics within 1e-6."""
    runs = sorted(p.name for p in (whole / "runs").iterdir())
    assert runs == sorted(p.name for p in (merged / "runs").iterdir())
    for name in runs:  # rewritten in the unsharded order (queries sorted)
        if name.removesuffix(".trec") in encoded:
            a, b = _trec(merged / "runs" / name), _trec(whole / "runs" / name)
            assert a.keys() == b.keys()
            for qid in b:
                assert [d for d, _ in a[qid][:10]] == [d for d, _ in b[qid][:10]], (name, qid)
                scores_a, scores_b = dict(a[qid]), dict(b[qid])
                assert all(abs(scores_a[d] - s) < 1e-5 for d, s in scores_b.items() if d in scores_a), (name, qid)
        else:
            assert (merged / "runs" / name).read_bytes() == (whole / "runs" / name).read_bytes(), name
    a, b = json.loads((merged / "results.json").read_text()), json.loads((whole / "results.json").read_text())
    for key in ("dataset", "split", "queries", "judged_queries", "queries_without_judgments", "qrels_repairs"):
        assert a[key] == b[key], key
    for name, system in b["systems"].items():
        keys = ("mean", "per_query", "missing_from_run", "provenance")
        if name in encoded:
            assert a["systems"][name]["provenance"] == system["provenance"], name
            assert a["systems"][name]["mean"] == pytest.approx(system["mean"], abs=1e-6), name
            continue
        for key in keys:
            assert a["systems"][name][key] == system[key], (name, key)
    # the significance tests over all queries, and the leaderboard's metric values
    board_a, board_b = (json.loads((d / "leaderboard.json").read_text()) for d in (merged, whole))
    keys = ("system", "n_queries", "metrics", "significance", "provenance", "index_bytes")
    rows_a = {r["system"]: r for r in board_a["rows"]}
    assert sorted(rows_a) == sorted(r["system"] for r in board_b["rows"])
    for row in board_b["rows"]:
        if row["system"] in encoded:
            assert rows_a[row["system"]]["metrics"] == pytest.approx(row["metrics"], abs=1e-6)
        else:
            assert [rows_a[row["system"]][k] for k in keys] == [row[k] for k in keys], row["system"]
    assert sum(bool(r["significance"]) for r in board_a["rows"]) == len(board_a["rows"]) - 1  # all but the baseline


def test_eval_shards_merge_into_the_unsharded_eval(small_collection, small_cache, tmp_path):
    from retrdistill.stages.evaluate import EvalConfig, run_eval
    from retrdistill.stages.merge import run_merge

    cfg = dict(systems=_systems(_run_file(small_collection, tmp_path / "other.trec")), baseline="BM25",
               measure_cost=False)
    whole = run_eval(EvalConfig(**cfg), small_collection, tmp_path / "whole", cache_dir=small_cache)
    parts = [run_eval(EvalConfig(**cfg, shard=f"{i}/4"), small_collection, tmp_path / f"e.{i}",
                      cache_dir=small_cache) for i in range(4)]
    assert [p.manifest.counts["judged_queries"] for p in parts] == [1, 2, 1, 2]  # 6 queries in 4 slices
    merged = run_merge([p.out_dir for p in reversed(parts)], tmp_path / "merged", cache_dir=small_cache,
                       collection_dir=small_collection)
    assert (merged.manifest.kind, merged.manifest.key) == ("eval", whole.manifest.key)
    assert merged.manifest.counts["systems"] == whole.manifest.counts["systems"]
    _assert_same_eval(merged.out_dir, whole.out_dir)

    # the CLI's merge passes --collection through
    from typer.testing import CliRunner

    from cli.app import app

    done = CliRunner().invoke(app, ["merge", *[str(p.out_dir) for p in parts], "--out", str(tmp_path / "cli"),
                                    "--collection", str(small_collection), "--cache-dir", str(small_cache), "--quiet"])
    assert done.exit_code == 0, done.output
    _assert_same_eval(tmp_path / "cli", whole.out_dir)
    with pytest.raises(ConfigError, match="need their collection"):
        run_merge([p.out_dir for p in parts], tmp_path / "no-collection", cache_dir=small_cache)
    with pytest.raises(ManifestError, match="shard\\(s\\) 3/4 .*missing"):
        run_merge([p.out_dir for p in parts[:3]], tmp_path / "bad", cache_dir=small_cache,
                  collection_dir=small_collection)
    other = run_eval(EvalConfig(**{**cfg, "depth": 50}, shard="3/4"), small_collection, tmp_path / "other",
                     cache_dir=small_cache)
    with pytest.raises(ManifestError, match="foreign shard.*config differs in depth"):
        run_merge([*[p.out_dir for p in parts[:3]], other.out_dir], tmp_path / "bad", cache_dir=small_cache,
                  collection_dir=small_collection)
    with pytest.raises(ConfigError, match="at most 6 shards"):
        run_eval(EvalConfig(**cfg, shard="0/8"), small_collection, tmp_path / "empty", cache_dir=small_cache)
    with pytest.raises(ConfigError, match="shard with datasets"):
        EvalConfig(**cfg, shard="0/2", datasets=[str(small_collection)])


PIPELINE = """\
name: sharded-eval
collection: {collection}
workdir: {workdir}
cache_dir: {cache}
steps:
  - id: eval
    stage: eval
    shards: 3
    baseline: BM25
    systems: {systems}
"""


@pytest.mark.slow  # encodes the small corpus with MiniLM once (the shards read the cached embeddings)
def test_a_pipeline_eval_step_with_shards_and_a_dense_system_equals_the_unsharded_eval(
        small_collection, small_cache, minilm, tmp_path):
    from retrdistill.pipeline import load_pipeline, run_pipeline
    from retrdistill.stages.evaluate import EvalConfig, run_eval

    systems = _systems(_run_file(small_collection, tmp_path / "other.trec"), dense=minilm)
    whole = run_eval(EvalConfig(systems=systems, baseline="BM25"), small_collection, tmp_path / "whole",
                     cache_dir=small_cache)
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.format(collection=small_collection, workdir=tmp_path / "runs", cache=small_cache,
                                    systems=json.dumps(systems)))
    pipeline = load_pipeline(path)
    assert list(pipeline.steps) == ["eval-shard-0-of-3", "eval-shard-1-of-3", "eval-shard-2-of-3", "eval"]
    run_pipeline(pipeline)
    _assert_same_eval(tmp_path / "runs" / "eval", whole.out_dir, encoded=("dense",))
