"""Many datasets in one evaluation, fused runs as an eval system, and an index evaluated on another corpus.

The datasets are real: disjoint query halves of the bundled sample, each with its judged passages and a slice of
the others, so per-dataset numbers differ and the mean rows are meaningful.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retrdistill.cli.app import app
from retrdistill.data.beir import find_collections, open_collection
from retrdistill.errors import ConfigError, DataError
from retrdistill.evaluation.fusion import fuse_runs
from retrdistill.evaluation.leaderboard import load_leaderboard
from retrdistill.evaluation.metrics import evaluate
from retrdistill.evaluation.runs import read_trec_run, truncate
from retrdistill.stages.evaluate import EvalConfig, run_eval, run_eval_datasets

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "msmarco-dl-5k"

SYSTEMS = [
    {"name": "BM25", "type": "bm25"},
    {"name": "BM25 k1=0.9 b=0.4", "type": "bm25", "options": {"k1": 0.9, "b": 0.4}},
    {"name": "RRF", "type": "fusion", "options": {"systems": ["BM25", "BM25 k1=0.9 b=0.4"], "method": "rrf"}},
]


def _cut(out: Path, query_ids: list[str], others: int) -> Path:
    rows = [line.split("\t") for line in (SAMPLE / "qrels" / "test.tsv").read_text().splitlines()]
    judged = {r[1] for r in rows if r[0] in query_ids}
    lines = (SAMPLE / "corpus.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n")
    kept, extra = [], 0
    for line in lines:
        if json.loads(line)["_id"] in judged:
            kept.append(line)
        elif extra < others:
            kept.append(line)
            extra += 1
    out.mkdir(parents=True)
    (out / "corpus.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    queries = [q for q in (SAMPLE / "queries.jsonl").read_text().splitlines() if json.loads(q)["_id"] in query_ids]
    (out / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    (out / "qrels").mkdir()
    (out / "qrels" / "test.tsv").write_text("".join("\t".join(r) + "\n" for r in rows if r[0] in query_ids),
                                            encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    qids = sorted({line.split("\t")[0] for line in (SAMPLE / "qrels" / "test.tsv").read_text().splitlines()})
    _cut(root / "dl-half-a", qids[:5], 300)
    _cut(root / "dl-half-b", qids[5:10], 500)
    (root / "notes").mkdir()  # not a collection: ignored
    return root


def test_find_collections_in_a_folder_and_errors(datasets_dir, tmp_path):
    found = find_collections([datasets_dir])
    assert list(found) == ["dl-half-a", "dl-half-b"]
    assert find_collections([datasets_dir / "dl-half-b"]) == {"dl-half-b": datasets_dir / "dl-half-b"}
    with pytest.raises(DataError, match="holds no BEIR-format collection") as err:
        find_collections([datasets_dir / "notes"])
    assert err.value.path == str(datasets_dir / "notes")
    with pytest.raises(DataError, match="not found"):
        find_collections([tmp_path / "missing"])
    twin = tmp_path / "elsewhere" / "dl-half-a"
    twin.parent.mkdir()
    twin.symlink_to(datasets_dir / "dl-half-b", target_is_directory=True)
    with pytest.raises(DataError, match="a second dataset named 'dl-half-a'"):
        find_collections([datasets_dir, twin])


def test_many_datasets_rows_equal_single_evaluations_and_means(datasets_dir, tmp_path):
    cfg = EvalConfig(systems=SYSTEMS, baseline="BM25", measure_cost=False)
    many = run_eval_datasets(cfg, [datasets_dir], tmp_path / "eval", cache_dir=tmp_path / "cache")
    assert set(many.datasets) == {"dl-half-a", "dl-half-b"} and not many.skipped
    board = load_leaderboard(tmp_path / "eval" / "leaderboard" / "leaderboard.json")
    assert board.datasets() == ["dl-half-a", "dl-half-b"]
    for name in board.datasets():
        alone = run_eval(EvalConfig(systems=SYSTEMS, baseline="BM25", measure_cost=False, dataset_name=name),
                         datasets_dir / name, tmp_path / f"alone-{name}", cache_dir=tmp_path / "cache")
        single = load_leaderboard(alone.out_dir / "leaderboard.json")
        for row in single.rows:
            combined = board.row(row.system, name)
            assert combined.metrics == row.metrics
            assert {m: s.p_corrected for m, s in combined.significance.items()} == \
                   {m: s.p_corrected for m, s in row.significance.items()}
    a, b = board.rows_for("dl-half-a"), board.rows_for("dl-half-b")
    assert {r.system: r.metrics["ndcg@10"] for r in a} != {r.system: r.metrics["ndcg@10"] for r in b}
    for mean in board.mean_rows():
        for metric, value in mean.metrics.items():
            expected = np.mean([board.row(mean.system, d).metrics[metric] for d in board.datasets()])
            assert value == pytest.approx(expected, abs=1e-12)
    markdown = (tmp_path / "eval" / "leaderboard" / "leaderboard.md").read_text(encoding="utf-8")
    assert "dl-half-a" in markdown and "dl-half-b" in markdown and "Mean" in markdown
    # resumable: a second call skips every dataset and the combined leaderboard
    again = run_eval_datasets(cfg, [datasets_dir], tmp_path / "eval", cache_dir=tmp_path / "cache")
    assert again.skipped


def test_changed_dataset_reruns_only_that_dataset(datasets_dir, tmp_path):
    root = tmp_path / "ds"
    for name in ("dl-half-a", "dl-half-b"):
        _copy(datasets_dir / name, root / name)
    cfg = EvalConfig(systems=SYSTEMS[:1], measure_cost=False)
    run_eval_datasets(cfg, [root], tmp_path / "eval", cache_dir=tmp_path / "cache")
    qrels = root / "dl-half-b" / "qrels" / "test.tsv"
    qrels.write_text("\n".join(qrels.read_text().splitlines()[:-5]) + "\n")
    again = run_eval_datasets(cfg, [root], tmp_path / "eval", cache_dir=tmp_path / "cache")
    assert again.datasets["dl-half-a"].skipped
    assert not again.datasets["dl-half-b"].skipped and not again.leaderboard.skipped


def _copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


def test_fused_system_equals_ranx_fusion_of_the_written_runs(datasets_dir, tmp_path):
    root = datasets_dir / "dl-half-a"
    result = run_eval(EvalConfig(systems=SYSTEMS, measure_cost=False), root, tmp_path / "eval", cache_dir=tmp_path / "c")
    runs_dir = result.out_dir / "runs"
    parts = [read_trec_run(runs_dir / "BM25.trec"), read_trec_run(runs_dir / "BM25-k1-0.9-b-0.4.trec")]
    expected = truncate(fuse_runs(parts, "rrf"), 100)
    fused = read_trec_run(runs_dir / "RRF.trec")
    assert set(fused) == set(expected)
    for q in expected:
        assert list(fused[q]) == list(expected[q])
    qrels, _ = open_collection(root).qrels("test")
    results = json.loads((result.out_dir / "results.json").read_text())
    assert results["systems"]["RRF"]["mean"]["ndcg@10"] == pytest.approx(
        evaluate(qrels, expected, ["ndcg@10"]).mean["ndcg@10"], abs=1e-9)
    cost = results["systems"]["RRF"]["cost"]
    parts_cost = [results["systems"][n]["cost"] for n in ("BM25", "BM25 k1=0.9 b=0.4")]
    assert cost["ms_per_query"] >= sum(c["ms_per_query"] for c in parts_cost)
    assert cost["index_bytes"] == sum(c["index_bytes"] for c in parts_cost)


@pytest.mark.parametrize("systems, problem", [
    ([{"name": "F", "type": "fusion", "options": {"systems": ["A", "B"]}}, {"name": "A", "type": "bm25"}],
     "fuses 'A', which is not a system listed before it"),
    ([{"name": "A", "type": "bm25"}, {"name": "F", "type": "fusion", "options": {"systems": ["A"]}}],
     "at least two distinct systems"),
    ([{"name": "A", "type": "bm25"}, {"name": "B", "type": "bm25"},
      {"name": "F", "type": "fusion", "options": {"systems": ["A", "B"], "method": "borda"}}],
     "unknown fusion method 'borda'"),
])
def test_fused_system_config_errors(tmp_path, datasets_dir, systems, problem):
    with pytest.raises(ConfigError, match=problem):
        cfg = EvalConfig(systems=systems, measure_cost=False)
        run_eval(cfg, datasets_dir / "dl-half-a", tmp_path / "eval", cache_dir=tmp_path / "c")


def test_index_of_one_dataset_is_evaluated_on_another_with_its_model(datasets_dir, tmp_path, minilm):
    """A student's index built on dataset A, evaluated on dataset B, ranks like the same model encoding B."""
    from retrdistill.stages.index import IndexConfig, run_index

    index = run_index(IndexConfig(), datasets_dir / "dl-half-a", minilm, tmp_path / "index", cache_dir=tmp_path / "c")
    systems = [{"name": "student", "type": "index", "options": {"path": str(index.out_dir)}},
               {"name": "same model", "type": "dense", "options": {"model": minilm}}]
    many = run_eval_datasets(EvalConfig(systems=systems, measure_cost=False), [datasets_dir], tmp_path / "eval",
                             cache_dir=tmp_path / "c")
    board = load_leaderboard(many.leaderboard.out_dir / "leaderboard.json")
    for name in ("dl-half-a", "dl-half-b"):
        assert board.row("student", name).metrics == pytest.approx(board.row("same model", name).metrics, abs=1e-6)
    assert board.row("student", "dl-half-b").provenance.get("encoded_here") == "flat"
    assert "encoded_here" not in board.row("student", "dl-half-a").provenance


def test_cli_eval_over_a_datasets_folder(datasets_dir, tmp_path):
    out = tmp_path / "cli-eval"
    result = CliRunner().invoke(app, ["eval", "--datasets", str(datasets_dir), "--out", str(out), "--system", "BM25=bm25",
                                      "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (out / "datasets" / "dl-half-a" / "manifest.json").is_file()
    assert (out / "leaderboard" / "leaderboard.html").is_file()
    assert "dl-half-b" in result.output
    both = CliRunner().invoke(app, ["eval", "--datasets", str(datasets_dir), "--collection", str(datasets_dir / "dl-half-a"),
                                    "--out", str(out), "--system", "BM25=bm25"])
    assert both.exit_code != 0 and "either --collection or --datasets" in both.output


def test_pipeline_eval_stage_over_datasets(datasets_dir, tmp_path):
    from retrdistill.pipeline import load_pipeline, run_pipeline

    base = tmp_path / "project"
    (base / "data").mkdir(parents=True)
    _copy(datasets_dir, base / "data" / "beir")
    spec = base / "eval-only.yaml"
    spec.write_text(
        "name: eval-only\n"
        "collection: data/beir/dl-half-a\n"
        "steps:\n"
        "  - id: eval\n"
        "    stage: eval\n"
        "    datasets: [data/beir]\n"
        "    measure_cost: false\n"
        "    systems: [{name: BM25, type: bm25}]\n", encoding="utf-8")
    pipeline = load_pipeline(spec, base_dir=base)
    assert pipeline.steps["eval"].config.datasets == [str((base / "data" / "beir").resolve())]
    [result] = run_pipeline(pipeline)
    board = load_leaderboard(base / "runs" / "eval-only" / "eval" / "leaderboard" / "leaderboard.json")
    assert board.datasets() == ["dl-half-a", "dl-half-b"] and not result.skipped
    spec.write_text(spec.read_text().replace("[data/beir]", "[../outside]"), encoding="utf-8")
    with pytest.raises(ConfigError, match="escapes the base folder"):
        load_pipeline(spec, base_dir=base)
