"""Mine shards: a mine step run as ``shard: I/N`` mines a contiguous range of the training queries in whole
``batch_queries`` blocks; the checked merge of the N shards is the unsharded ``candidates.jsonl`` byte for byte.
Real BM25 mining (random sampling, seeded per query) on the small real collection.
"""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from retrdistill.artefacts import read_manifest
from retrdistill.errors import ManifestError

MINE = {"negatives": 3, "depth": 20, "rank_max": 20, "batch_queries": 8}


@pytest.fixture(scope="module")
def work(small_collection, tmp_path_factory):
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries

    work = tmp_path_factory.mktemp("mine-shards")
    run_queries(QueriesConfig(options={"num_queries": 30}), small_collection, work / "queries",
                cache_dir=work / "cache")
    run_mine(MineConfig(**MINE), small_collection, work / "queries", work / "single", cache_dir=work / "cache")
    for i in range(3):
        run_mine(MineConfig(**MINE, shard=f"{i}/3"), small_collection, work / "queries", work / f"shard.{i}",
                 cache_dir=work / "cache")
    return work


def test_three_mine_shards_merged_equal_the_unsharded_candidates_byte_for_byte(work):
    from retrdistill.stages.merge import run_merge

    sizes = [len((work / f"shard.{i}" / "candidates.jsonl").read_text().splitlines()) for i in range(3)]
    assert sizes == [8, 8, 14]  # 4 blocks of 8 queries (the last of 6) over 3 shards: 1, 1 and 2 blocks
    merged = run_merge([work / f"shard.{i}" for i in (1, 2, 0)], work / "merged")
    single = read_manifest(work / "single")
    assert (merged.out_dir / "candidates.jsonl").read_bytes() == (work / "single" / "candidates.jsonl").read_bytes()
    assert (merged.manifest.kind, merged.manifest.stage, merged.manifest.key) == ("candidates", "mine", single.key)
    assert merged.manifest.counts["queries"] == 30 and merged.manifest.counts["negatives"] == single.counts["negatives"]


def test_a_mine_merge_with_a_missing_or_foreign_shard_is_refused(small_collection, work, tmp_path):
    from retrdistill.stages.merge import run_merge
    from retrdistill.stages.mine import MineConfig, run_mine

    with pytest.raises(ManifestError, match=r"shard\(s\) 2/3 of mine missing or unfinished"):
        run_merge([work / "shard.0", work / "shard.1"], tmp_path / "m1")
    other = run_mine(MineConfig(**{**MINE, "seed": 14}, shard="2/3"), small_collection, work / "queries",
                     tmp_path / "seed14", cache_dir=work / "cache")
    with pytest.raises(ManifestError, match="foreign shard .* its config differs in seed"):
        run_merge([work / "shard.0", work / "shard.1", other.out_dir], tmp_path / "m2")
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()


def test_cli_mine_and_index_take_a_shard_option(small_collection, work, tmp_path):
    from retrdistill.cli.app import app

    runner = CliRunner()
    out = runner.invoke(app, ["mine", "--collection", str(small_collection), "--queries", str(work / "queries"),
                              "--out", str(tmp_path / "s1"), "--cache-dir", str(work / "cache"),
                              "--negatives", "3", "--depth", "20", "--rank-max", "20", "--batch-queries", "8",
                              "--shard", "1/3"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "s1" / "candidates.jsonl").read_bytes() == (work / "shard.1" / "candidates.jsonl").read_bytes()
    bad = runner.invoke(app, ["index", "--collection", str(small_collection), "--model", "offline:x",
                              "--out", str(tmp_path / "i"), "--shard", "3/3"])
    assert bad.exit_code != 0 and "expected I/N with 0 <= I < N" in bad.output


def test_a_pipeline_mine_step_with_shards_expands_to_shard_steps_and_a_merge(small_collection, tmp_path):
    from retrdistill.pipeline import load_pipeline

    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: x
        collection: {small_collection}
        steps:
          - id: q
            stage: queries
          - id: neg
            stage: mine
            queries: "@q"
            shards: 2
          - id: idx
            stage: index
            model: offline:all-MiniLM-L6-v2
            shards: 3
        """))
    pipeline = load_pipeline(path)
    assert list(pipeline.steps) == ["q", "neg-shard-0-of-2", "neg-shard-1-of-2", "neg",
                                    "idx-shard-0-of-3", "idx-shard-1-of-3", "idx-shard-2-of-3", "idx"]
    assert pipeline.steps["neg"].stage.name == "merge" and pipeline.steps["neg"].stage.output == "candidates"
    assert pipeline.steps["idx"].stage.output == "index"
    assert pipeline.steps["idx-shard-2-of-3"].config.shard == "2/3"
