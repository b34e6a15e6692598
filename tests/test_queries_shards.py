"""Sharded queries steps: ``shard: I/N`` parts merged into exactly the unsharded artefact (inverse cloze; the
``llm`` source with SmolLM2, whose shards generate only their own passages), the llm source's whole-set rules
(deduplication across shards, sample order) applied by the merge, and the refusals."""

from __future__ import annotations

import pytest

from retrdistill.artefacts import read_manifest
from retrdistill.errors import ConfigError, ManifestError
from retrdistill.shards import Shard

SMOL = "offline:smollm2-135m-instruct"


def _same_files(a, b) -> None:
    for name in ("queries.jsonl", "qrels.tsv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_inverse_cloze_shards_merge_into_the_unsharded_artefact(small_collection, tmp_path):
    from retrdistill.stages.merge import run_merge
    from retrdistill.stages.queries import QueriesConfig, run_queries

    options = {"num_queries": 40}
    cache = tmp_path / "cache"
    whole = run_queries(QueriesConfig(options=options), small_collection, tmp_path / "whole", cache_dir=cache)
    parts = [run_queries(QueriesConfig(options=options, shard=f"{i}/3"), small_collection, tmp_path / f"q.{i}",
                         cache_dir=cache) for i in range(3)]
    sizes = [p.manifest.counts["queries"] for p in parts]
    assert sizes == [13, 13, 14] and all(p.manifest.config["shard"] == f"{i}/3" for i, p in enumerate(parts))
    merged = run_merge([tmp_path / f"q.{i}" for i in (1, 2, 0)], tmp_path / "merged", cache_dir=cache)
    _same_files(merged.out_dir, whole.out_dir)
    assert (merged.manifest.kind, merged.manifest.key) == ("queries", whole.manifest.key)
    assert merged.manifest.counts["queries"] == 40 and merged.manifest.counts["shards"] == 3
    # the merged artefact is current for the unsharded step: a rerun of it there is skipped
    assert run_queries(QueriesConfig(options=options), small_collection, tmp_path / "merged", cache_dir=cache).skipped

    other = run_queries(QueriesConfig(options={**options, "seed": 5}, shard="2/3"), small_collection,
                        tmp_path / "foreign", cache_dir=cache)
    with pytest.raises(ManifestError, match="foreign shard.*inputs differ in source"):
        run_merge([tmp_path / "q.0", tmp_path / "q.1", other.out_dir], tmp_path / "bad", cache_dir=cache)
    with pytest.raises(ManifestError, match="shard\\(s\\) 1/3 .*missing"):
        run_merge([tmp_path / "q.0", tmp_path / "q.2"], tmp_path / "bad", cache_dir=cache)


def test_a_source_not_known_to_be_deterministic_refuses_a_shard(small_collection, tmp_path):
    from retrdistill.data.beir import open_collection
    from retrdistill.pseudo_queries import TrainingQueries
    from retrdistill.parts import QuerySource

    class Drawn(QuerySource):  # e.g. a source that samples differently each run
        def fingerprint(self):
            return {"source": "drawn"}

        def generate(self, collection):
            return TrainingQueries({"q": "a query"}, {"q": {"d": 1}})

    collection = open_collection(small_collection, tmp_path / "corpora")
    with pytest.raises(ConfigError, match="Drawn: cannot be sharded"):
        Drawn().shard(collection, Shard(0, 2))


def test_llm_combine_drops_duplicates_across_shards_in_the_unsharded_order(tmp_path):
    from retrdistill import registry
    from retrdistill.pseudo_queries import TrainingQueries

    source = registry.build("query_generator", "llm", {"llm_options": {"model": SMOL}, "queries_per_passage": 2,
                                                        "temperature": 0.5}, cache_dir=tmp_path)
    # two shards, each sample by sample; unsharded order: sample 0 of every passage, then sample 1
    a = TrainingQueries({"llm-d1-0": "Red fox?", "llm-d2-0": "blue whale", "llm-d1-1": "green tea"},
                        {"llm-d1-0": {"d1": 1}, "llm-d2-0": {"d2": 1}, "llm-d1-1": {"d1": 1}})
    b = TrainingQueries({"llm-d3-0": "red  fox", "llm-d3-1": "Green tea!", "llm-d4-1": "grey owl"},
                        {"llm-d3-0": {"d3": 1}, "llm-d3-1": {"d3": 1}, "llm-d4-1": {"d4": 1}})
    train = source.combine(None, [a, b])
    assert list(train.queries) == ["llm-d1-0", "llm-d2-0", "llm-d1-1", "llm-d4-1"]
    assert train.positives["llm-d4-1"] == {"d4": 1}
    assert source.counts() == {"dropped_duplicate": 2, "kept": 4}
    filtered = registry.build("query_generator", "llm", {"llm_options": {"model": SMOL}, "filter_teacher":
                                                          "bi-encoder"}, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="needs the collection"):
        filtered.combine(None, [a])


@pytest.mark.slow
def test_llm_query_shards_generate_their_own_passages_and_merge_into_the_unsharded_artefact(
        small_collection, small_cache, tmp_path):
    import torch

    from retrdistill.stages.merge import run_merge
    from retrdistill.stages.queries import QueriesConfig, run_queries

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest on a busy machine
    try:
        options = {"llm_options": {"model": SMOL, "batch_size": 2}, "num_passages": 6, "max_new_tokens": 12,
                   "max_passage_chars": 300}
        whole = run_queries(QueriesConfig(source="llm", options=options), small_collection, tmp_path / "whole",
                            cache_dir=tmp_path / "cache-whole")
        # the shards have a cache of their own, so they generate (rather than read what the whole run wrote)
        parts = [run_queries(QueriesConfig(source="llm", options=options, shard=f"{i}/2"), small_collection,
                             tmp_path / f"q.{i}", cache_dir=tmp_path / "cache-shards") for i in range(2)]
    finally:
        torch.set_num_threads(threads)
    # 6 passages in 3 batches of 2: shard 0 takes one batch, shard 1 two; each generates only its own
    assert [p.manifest.counts["passages"] for p in parts] == [2, 4]
    assert [p.manifest.counts["generated"] for p in parts] == [2, 4]
    merged = run_merge([p.out_dir for p in parts], tmp_path / "merged", cache_dir=tmp_path / "cache-shards",
                       collection_dir=small_collection)
    _same_files(merged.out_dir, whole.out_dir)
    assert merged.manifest.key == whole.manifest.key
    counts, expected = merged.manifest.counts, whole.manifest.counts
    for key in ("queries", "positives", "passages", "generated", "written", "kept", "dropped_duplicate",
                "dropped_empty", "dropped_too_short", "dropped_too_long", "dropped_collection_query",
                "eval_queries_used"):
        assert counts[key] == expected[key], key
    assert read_manifest(tmp_path / "merged").counts["shards"] == 2


def test_cli_queries_shards_and_merge(small_collection, tmp_path):
    from typer.testing import CliRunner

    from retrdistill.cli.app import app

    runner = CliRunner()
    common = ["--collection", str(small_collection), "--cache-dir", str(tmp_path / "cache"), "-o", "num_queries=9",
              "-q"]
    for i in range(2):
        done = runner.invoke(app, ["queries", *common, "--out", str(tmp_path / f"q.{i}"), "--shard", f"{i}/2"])
        assert done.exit_code == 0, done.output
    merged = runner.invoke(app, ["merge", str(tmp_path / "q.0"), str(tmp_path / "q.1"), "--out",
                                 str(tmp_path / "merged"), "--cache-dir", str(tmp_path / "cache"), "-q"])
    assert merged.exit_code == 0, merged.output
    whole = runner.invoke(app, ["queries", *common, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    _same_files(tmp_path / "merged", tmp_path / "whole")
    assert read_manifest(tmp_path / "merged").key == read_manifest(tmp_path / "whole").key
