"""Sharded stages: host-aware temporaries, ``--shard I/N`` score runs whose checked merge equals the unsharded
run byte for byte (with the per-shard score caches merged), refused merges, and ``shards: N`` pipeline steps.

Real parts throughout: BM25 mining and a bi-encoder teacher (a tiny offline BERT) on the small real collection.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import textwrap

import pytest
from typer.testing import CliRunner

from retrdistill.artefacts import atomic_dir, host_tag, read_manifest, remove_stale_temps
from retrdistill.errors import ConfigError, ManifestError
from retrdistill.shards import Shard, parse_shard

MODEL = "offline:tiny-bert-mlm"
TEACHER = {"model": MODEL, "encode_corpus": False, "max_seq_length": 64, "batch_size": 32}


def _dead_pid() -> int:
    pid = os.getpid() + 100_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


# ------------------------------------------------------------------ temporaries
def test_temporaries_name_their_host_and_only_this_hosts_dead_ones_are_removed(tmp_path):
    target = tmp_path / "stage"
    dead = _dead_pid()
    mine = tmp_path / f".stage.@{host_tag()}.{dead}-a1b2.tmp"
    mine.mkdir()
    mine_trash = tmp_path / f".stage.old-@{host_tag()}.{dead}-c3d4"
    mine_trash.mkdir()
    # the same pid on another host sharing the filesystem: its process cannot be seen from here, so it is kept
    foreign = tmp_path / f".stage.@node-7_cluster.{dead}-e5f6.tmp"
    foreign.mkdir()
    (foreign / "partial.jsonl").write_text("still being written elsewhere")
    foreign_trash = tmp_path / f".stage.old-@node-7_cluster.{dead}-0000"
    foreign_trash.mkdir()
    with atomic_dir(target) as tmp:
        assert tmp.name.startswith(f".stage.@{host_tag()}.{os.getpid()}-")
        (tmp / "data.txt").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["stage", foreign.name, foreign_trash.name])
    assert (foreign / "partial.jsonl").read_text() == "still being written elsewhere"
    assert remove_stale_temps(target) == 0


def test_shard_ranges_are_contiguous_balanced_and_cover_every_row_once():
    for total in (0, 1, 7, 40, 1001):
        for count in (1, 2, 3, 4, 7):
            for unit in (1, 8):
                ranges = [Shard(i, count).rows(total, unit) for i in range(count)]
                assert [r for rng in ranges for r in rng] == list(range(total))
                assert all(rng.start % unit == 0 for rng in ranges)  # whole batches
                full = [len(rng) for rng in ranges[:-1]]  # all but the last hold whole blocks
                assert not full or max(full) - min(full) <= unit
    assert parse_shard("2/4") == Shard(2, 4) and parse_shard("") is None
    for bad in ("4/4", "-1/4", "1/0", "a/b", "1"):
        with pytest.raises(ConfigError, match="expected I/N"):
            parse_shard(bad)


# ------------------------------------------------------------------ sharded scoring
@pytest.fixture(scope="module")
def upstream_dirs(small_collection, tmp_path_factory):
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries

    work = tmp_path_factory.mktemp("shards-upstream")
    cache = work / "cache"
    run_queries(QueriesConfig(options={"num_queries": 30}), small_collection, work / "queries", cache_dir=cache)
    run_mine(MineConfig(negatives=3, depth=20, rank_max=20), small_collection, work / "queries", work / "candidates",
             cache_dir=cache)
    return work


@pytest.fixture(scope="module")
def unsharded(small_collection, upstream_dirs, tmp_path_factory):
    from retrdistill.stages.score import ScoreConfig, run_score

    work = tmp_path_factory.mktemp("unsharded")
    return run_score(ScoreConfig(options=TEACHER, batch_queries=8), small_collection, upstream_dirs / "candidates",
                     work / "scores", cache_dir=work / "cache")


@pytest.fixture(scope="module")
def four_shards(small_collection, upstream_dirs, tmp_path_factory):
    from retrdistill.stages.score import ScoreConfig, run_score

    work = tmp_path_factory.mktemp("four-shards")
    for i in range(4):  # as four array jobs would: each its own folder and cache file
        run_score(ScoreConfig(options=TEACHER, batch_queries=8, shard=f"{i}/4"), small_collection,
                  upstream_dirs / "candidates", work / f"scores.{i}", cache_dir=work / "cache")
    return work


def test_four_score_shards_merged_equal_the_unsharded_run_exactly(four_shards, unsharded):
    from retrdistill.stages.merge import run_merge

    shards = [four_shards / f"scores.{i}" for i in (2, 0, 3, 1)]  # any order: merged in shard order
    sizes = [len((d / "scores.jsonl").read_text().splitlines()) for d in shards]
    assert sum(sizes) == 30 and sorted(sizes) == [6, 8, 8, 8]
    assert all(read_manifest(d).config["shard"] == f"{i}/4" for d, i in zip(shards, (2, 0, 3, 1)))
    merged = run_merge(shards, four_shards / "scores", cache_dir=four_shards / "cache")
    assert (merged.out_dir / "scores.jsonl").read_bytes() == (unsharded.out_dir / "scores.jsonl").read_bytes()
    # the merged artefact is the unsharded one: same kind, stage and key, so downstream steps see no difference
    assert (merged.manifest.kind, merged.manifest.stage, merged.manifest.key) == \
        ("scores", "score", unsharded.manifest.key)
    assert "shard" not in merged.manifest.config
    assert merged.manifest.counts["groups"] == 30 and merged.manifest.counts["shards"] == 4
    # one cache file per shard (no two writers on one SQLite file), merged into the main cache
    cache = four_shards / "cache"
    assert sorted(p.name for p in cache.glob("scores*.sqlite")) == [
        "scores.shard-0-of-4.sqlite", "scores.shard-1-of-4.sqlite", "scores.shard-2-of-4.sqlite",
        "scores.shard-3-of-4.sqlite", "scores.sqlite"]
    pairs = unsharded.manifest.counts["pairs_scored"]
    with sqlite3.connect(cache / "scores.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == pairs
    assert merged.manifest.counts["cache_rows_merged"] == pairs
    again = run_merge(shards, four_shards / "scores", cache_dir=cache)
    assert again.skipped


def test_an_unsharded_rerun_on_the_merged_cache_scores_nothing(small_collection, upstream_dirs, four_shards):
    from retrdistill.stages.merge import run_merge
    from retrdistill.stages.score import ScoreConfig, run_score

    run_merge([four_shards / f"scores.{i}" for i in range(4)], four_shards / "scores", cache_dir=four_shards / "cache")
    rerun = run_score(ScoreConfig(options=TEACHER), small_collection, upstream_dirs / "candidates",
                      four_shards / "rerun", cache_dir=four_shards / "cache")
    assert rerun.manifest.counts["pairs_scored"] == 0
    assert (rerun.out_dir / "scores.jsonl").read_bytes() == (four_shards / "scores" / "scores.jsonl").read_bytes()


def test_a_merge_with_a_missing_unfinished_duplicated_or_foreign_shard_is_refused(
        small_collection, upstream_dirs, four_shards, tmp_path):
    from retrdistill.stages.merge import run_merge
    from retrdistill.stages.score import ScoreConfig, run_score

    shards = [four_shards / f"scores.{i}" for i in range(4)]
    with pytest.raises(ManifestError, match=r"shard\(s\) 3/4 of score missing"):
        run_merge(shards[:3], tmp_path / "out")
    unfinished = tmp_path / "unfinished"  # a shard still running (or killed): files, no manifest
    shutil.copytree(shards[3], unfinished)
    (unfinished / "manifest.json").unlink()
    with pytest.raises(ManifestError, match=f"{unfinished}: no finished"):
        run_merge([*shards[:3], unfinished], tmp_path / "out")
    with pytest.raises(ManifestError, match="shard 1/4 given twice"):
        run_merge([*shards, shards[1]], tmp_path / "out")
    other = run_score(ScoreConfig(options={**TEACHER, "max_seq_length": 32}, shard="3/4"), small_collection,
                      upstream_dirs / "candidates", tmp_path / "foreign", cache_dir=tmp_path / "cache")
    with pytest.raises(ManifestError, match=f"{other.out_dir}: foreign shard .*inputs differ in teacher"):
        run_merge([*shards[:3], other.out_dir], tmp_path / "out")
    wrong_count = run_score(ScoreConfig(options=TEACHER, shard="1/2"), small_collection, upstream_dirs / "candidates",
                            tmp_path / "half", cache_dir=tmp_path / "cache")
    with pytest.raises(ManifestError, match="shard 1/2 of 2, expected one of 4"):
        run_merge([*shards, wrong_count.out_dir], tmp_path / "out")
    with pytest.raises(ManifestError, match="not a shard"):
        run_merge([upstream_dirs / "candidates"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written by a refused merge


def test_cli_shard_option_and_merge_command(small_collection, upstream_dirs, four_shards, tmp_path):
    from retrdistill.cli.app import app

    runner = CliRunner()
    bad = runner.invoke(app, ["score", "--collection", str(small_collection), "--candidates",
                              str(upstream_dirs / "candidates"), "--out", str(tmp_path / "x"), "--shard", "4/4"])
    assert bad.exit_code == 2 and "expected I/N" in bad.output
    ok = runner.invoke(app, ["merge", *(str(four_shards / f"scores.{i}") for i in range(4)),
                             "--out", str(tmp_path / "merged"), "--cache-dir", str(four_shards / "cache"), "-q"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "merged" / "scores.jsonl").read_bytes() == \
        b"".join((four_shards / f"scores.{i}" / "scores.jsonl").read_bytes() for i in range(4))
    missing = runner.invoke(app, ["merge", str(four_shards / "scores.0"), "--out", str(tmp_path / "m2")])
    assert missing.exit_code == 2 and "1/4, 2/4, 3/4 of score missing" in missing.output


# ------------------------------------------------------------------ pipelines
PIPELINE = """\
name: sharded
collection: {collection}
workdir: {workdir}
cache_dir: {cache}
steps:
  - {{id: q, stage: queries, options: {{num_queries: 30}}}}
  - {{id: neg, stage: mine, queries: "@q", negatives: 3, depth: 20, rank_max: 20}}
  - id: s
    stage: score
    candidates: "@neg"
    shards: 3
    batch_queries: 8
    options: {options}
"""


@pytest.mark.slow  # runs queries, mine and three score shards through the pipeline: ~30 s
def test_a_pipeline_step_with_shards_runs_each_shard_and_merges_under_its_own_id(small_collection, unsharded, tmp_path):
    from retrdistill.pipeline import load_pipeline, plan_pipeline, run_pipeline

    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.format(collection=small_collection, workdir=tmp_path / "runs", cache=tmp_path / "cache",
                                    options=TEACHER))
    pipeline = load_pipeline(path)
    ids = list(pipeline.steps)
    assert ids == ["q", "neg", "s-shard-0-of-3", "s-shard-1-of-3", "s-shard-2-of-3", "s"]
    assert pipeline.steps["s"].stage.name == "merge" and pipeline.steps["s"].stage.output == "scores"
    # a scheduler runs one shard per job (--only), then the merge
    run_pipeline(pipeline, only={"q", "neg", "s-shard-1-of-3"})
    plans = {p.id: p.state for p in plan_pipeline(pipeline)}
    assert plans["s-shard-1-of-3"] == "current" and plans["s-shard-0-of-3"] == "new"
    with pytest.raises(ManifestError, match="no finished"):
        run_pipeline(pipeline, only={"s"})
    run_pipeline(pipeline)
    assert (tmp_path / "runs" / "s" / "scores.jsonl").read_bytes() == (unsharded.out_dir / "scores.jsonl").read_bytes()
    assert all(p.state == "current" for p in plan_pipeline(load_pipeline(path)))


def test_shards_on_a_stage_that_cannot_be_sharded_is_an_error_naming_the_line(small_collection, tmp_path):
    from retrdistill.pipeline import load_pipeline

    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: x
        collection: {small_collection}
        steps:
          - id: q
            stage: queries
          - id: t
            stage: train
            scores: "@q"
            shards: 2
        """))
    with pytest.raises(ConfigError, match=r"line 9: step 't' \(train\): this stage cannot be sharded; "
                                          r"stages that can: .*score"):
        load_pipeline(path)


# ------------------------------------------------------------------ Ray
@pytest.mark.slow  # starts a local Ray cluster (GCS, raylet, two workers that load the teacher): ~1 min
def test_score_shards_as_ray_tasks_merge_to_the_unsharded_scores(small_collection, upstream_dirs, unsharded, tmp_path):
    ray = pytest.importorskip("ray", reason="the Ray backend needs pip install 'retrdistill[ray]'")
    from retrdistill.ray_shards import score_on_ray, shard_dirs
    from retrdistill.stages.score import ScoreConfig

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        merged = score_on_ray(ScoreConfig(options=TEACHER, batch_queries=8), small_collection,
                              upstream_dirs / "candidates", tmp_path / "scores", shards=3, cache_dir=tmp_path / "cache")
    finally:
        ray.shutdown()
    assert [read_manifest(d).config["shard"] for d in shard_dirs(tmp_path / "scores", 3)] == ["0/3", "1/3", "2/3"]
    assert (merged.out_dir / "scores.jsonl").read_bytes() == (unsharded.out_dir / "scores.jsonl").read_bytes()
    assert merged.manifest.key == unsharded.manifest.key and merged.manifest.counts["shards"] == 3
