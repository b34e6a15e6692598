"""LLM-written queries and hard negatives with a real small model (SmolLM2-135M-Instruct, GGUF) on real passages:
the generation cache (a re-run and a resumed killed run generate nothing twice; a changed template regenerates
only its own), the ``llm`` query source through the queries stage (counts, teacher filter), and the
``llm-negatives`` miner through mine -> score -> train, its passages never reaching an index."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from killing import run_until_marker_then_kill
from retrdistill import registry
from retrdistill.llm.cache import GenerationCache, generate_cached
from retrdistill.llm.client import GenerationParams
from retrdistill.llm.templates import load_template, parse_template

pytestmark = pytest.mark.slow
SMOL = "offline:smollm2-135m-instruct"
PASSAGES = [
    "The Great Barrier Reef is the world's largest coral reef system, off the coast of Queensland, Australia.",
    "Insulin is a hormone made by the pancreas that lets cells take up glucose from the blood.",
    "The Rosetta Stone, found in 1799, carries one decree in hieroglyphic, Demotic and Greek scripts.",
    "A leap year has 366 days; February then has 29 days instead of 28.",
    "Mount Kilimanjaro in Tanzania is the highest mountain in Africa, about 5,895 metres above sea level.",
    "Espresso is made by forcing hot water through finely ground coffee under high pressure.",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module: the model is tiny, and on a busy machine two oversubscribed threads
    generate many times slower than one (measured: 16 s against 1.9 s for one 8-token completion)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smol():
    return registry.build("llm", "transformers", {"model": SMOL, "batch_size": 3})


def _rows(namespace: Path) -> list[dict]:
    return [json.loads(line) for shard in sorted(namespace.glob("*.jsonl"))
            for line in shard.read_text(encoding="utf-8").splitlines()]


def test_cache_reuses_and_a_changed_template_regenerates_only_its_own(smol, tmp_path):
    cache = GenerationCache(tmp_path / "gen")
    params = GenerationParams(max_new_tokens=8, stop=("\n",))
    items = [(f"p{i}", {"passage": p}) for i, p in enumerate(PASSAGES[:3])]
    text = "Description.\n## system\nYou write search queries.\n## user\nPassage: {passage}\nQuery:\n"
    a = parse_template(text, tmp_path / "a.txt")
    b = load_template("inpars")
    first = generate_cached(smol, a, items, params, cache)
    assert (first.generated, first.from_cache) == (3, 0) and all(first.texts.values())
    assert generate_cached(smol, b, items, params, cache).generated == 3  # another template: its own entries
    again = generate_cached(smol, a, items, params, cache)
    assert (again.generated, again.from_cache) == (0, 3) and again.texts == first.texts
    # the description is not part of the template's digest; a message is
    assert generate_cached(smol, parse_template("Other words.\n" + text[13:], tmp_path / "a.txt"), items, params,
                           cache).generated == 0
    changed = parse_template(text.replace("search queries", "short search queries"), tmp_path / "a.txt")
    assert generate_cached(smol, changed, items, params, cache).generated == 3
    assert generate_cached(smol, b, items, params, cache).generated == 0
    # other sampling parameters or another model are other entries too
    assert generate_cached(smol, a, items[:1], GenerationParams(max_new_tokens=5, stop=("\n",)), cache).generated == 1


def test_a_killed_generation_resumes_and_generates_nothing_twice(smol, tmp_path):
    cache_dir = tmp_path / "gen"
    marker = tmp_path / "two-shards"
    script = textwrap.dedent(f"""
        import threading, time
        from pathlib import Path
        import torch
        torch.set_num_threads(1)
        from retrdistill import registry
        from retrdistill.llm.cache import GenerationCache, generate_cached
        from retrdistill.llm.client import GenerationParams
        from retrdistill.llm.templates import load_template

        cache = GenerationCache({str(cache_dir)!r})
        def watch():
            while len(list(Path({str(cache_dir)!r}).glob("*/*.jsonl"))) < 2:
                time.sleep(0.05)
            Path({str(marker)!r}).write_text("go")
        threading.Thread(target=watch, daemon=True).start()
        client = registry.build("llm", "transformers", {{"model": {SMOL!r}, "batch_size": 1}})
        items = [(f"p{{i}}", {{"passage": p}}) for i, p in enumerate({PASSAGES[:4]!r})]
        generate_cached(client, load_template("inpars"), items, GenerationParams(max_new_tokens=8, stop=("\\n",)), cache)
        time.sleep(600)  # never reached before the kill: every batch is slower than the kill
    """)
    run_until_marker_then_kill(script, marker)
    namespace = next(p for p in cache_dir.iterdir() if p.is_dir())
    before = {r["input"]: r["text"] for r in _rows(namespace)}
    assert 2 <= len(before) < 4
    items = [(f"p{i}", {"passage": p}) for i, p in enumerate(PASSAGES[:4])]
    resumed = generate_cached(registry.build("llm", "transformers", {"model": SMOL, "batch_size": 2}),
                              load_template("inpars"), items, GenerationParams(max_new_tokens=8, stop=("\n",)),
                              GenerationCache(cache_dir))
    assert (resumed.generated, resumed.from_cache) == (4 - len(before), len(before))
    rows = _rows(namespace)
    assert len(rows) == len({r["input"] for r in rows}) == 4  # each written once
    assert all(dict((r["input"], r["text"]) for r in rows)[k] == t for k, t in before.items())
    assert not list(namespace.glob(".*.tmp"))  # the killed run's unfinished shard is cleared away


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("llm-stages")


def test_llm_queries_stage_counts_dedups_filters_and_reuses(small_collection, small_cache, minilm, work):
    from retrdistill.artefacts import read_manifest
    from retrdistill.data.beir import open_collection
    from retrdistill.kinds import read_queries
    from retrdistill.stages.queries import QueriesConfig, run_queries

    options = {"llm_options": {"model": SMOL, "batch_size": 6}, "num_passages": 6, "max_new_tokens": 16,
               "max_passage_chars": 300}
    out = work / "queries"
    first = run_queries(QueriesConfig(source="llm", options=options), small_collection, out, cache_dir=small_cache)
    counts = first.manifest.counts
    assert counts["passages"] == counts["written"] == 6 and counts["generated"] == 6
    dropped = sum(v for k, v in counts.items() if k.startswith("dropped_"))
    assert counts["kept"] + dropped == 6 and counts["queries"] == counts["kept"] >= 3
    train = read_queries(out)
    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    rows = corpus.row_index()
    for qid, query in train.queries.items():
        (doc,) = train.positives[qid]
        assert qid == f"llm-{doc}" and doc in rows and 2 <= len(query.split()) <= 24
    assert len({q.lower() for q in train.queries.values()}) == len(train.queries)

    again = run_queries(QueriesConfig(source="llm", options=options), small_collection, out, cache_dir=small_cache,
                        force=True).manifest.counts
    assert (again["generated"], again["generations_from_cache"]) == (0, 6)
    assert read_queries(out).queries == train.queries

    teacher = {"model": minilm}
    filtered_opts = {**options, "filter_teacher": "bi-encoder", "filter_teacher_options": teacher, "filter_top_k": 3}
    filtered = run_queries(QueriesConfig(source="llm", options=filtered_opts), small_collection, work / "filtered",
                           cache_dir=small_cache).manifest.counts
    assert filtered["generated"] == 0  # the same generations, from the cache
    kept = read_queries(work / "filtered")
    assert filtered["kept"] == len(kept.queries) == len(train.queries) - filtered["dropped_teacher_filter"]
    run = registry.build("teacher", "bi-encoder", teacher, corpus=corpus, cache_dir=small_cache).retrieve(
        train.queries, 3)
    assert set(kept.queries) == {q for q in train.queries if set(train.positives[q]) & set(run[q])}
    assert read_manifest(work / "filtered").counts["dropped_teacher_filter"] == filtered["dropped_teacher_filter"]


def test_written_negatives_train_but_never_reach_an_index(small_collection, small_cache, minilm, work):
    from retrdistill.data.beir import open_collection
    from retrdistill.kinds import EXTRA_PASSAGES, read_candidates, read_scores
    from retrdistill.llm.passages import generated_id, read_passages
    from retrdistill.stages.index import IndexConfig, run_index
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score
    from retrdistill.stages.train import TrainConfig, run_train

    run_queries(QueriesConfig(options={"num_queries": 4}), small_collection, work / "q", cache_dir=small_cache)
    mined = run_mine(MineConfig(miner="llm-negatives", options={"llm_options": {"model": SMOL, "batch_size": 4},
                                                                "max_new_tokens": 40},
                                negatives=3, sampling="top", depth=20), small_collection, work / "q", work / "m",
                     cache_dir=small_cache)
    stats = mined.manifest.counts["miner"]
    written = read_passages(work / "m" / EXTRA_PASSAGES)
    assert stats["generated"] == 4 and stats["passages_written"] == len(written) >= 2
    assert mined.manifest.counts["generated_passages"] == len(written)
    groups = list(read_candidates(work / "m"))
    for g in groups:  # written negatives first, then BM25's; none is a positive
        gen = [d for d in g.negatives if d.startswith("gen-")]
        assert len(g.negatives) == 3 and gen == g.negatives[:len(gen)] and len(gen) <= 1
        assert all(generated_id(written[d]) == d for d in gen)
    assert sum(1 for g in groups for d in g.negatives if d.startswith("gen-")) == len(written)

    scored = run_score(ScoreConfig(options={"model": minilm}), small_collection, work / "m", work / "s",
                       cache_dir=small_cache)
    assert (work / "s" / EXTRA_PASSAGES).read_bytes() == (work / "m" / EXTRA_PASSAGES).read_bytes()
    assert scored.manifest.counts["pairs_scored"] == sum(len(g.positives) + len(g.negatives) for g in groups)
    by_id = {g.qid: g for g in read_scores(work / "s")}
    # a written negative's score is the teacher's score of its text, exactly as for a corpus passage
    teacher = registry.build("teacher", "bi-encoder", {"model": minilm}, cache_dir=small_cache,
                             corpus=open_collection(small_collection, small_cache / "corpora").corpus)
    g = next(g for g in by_id.values() if g.docids[g.positives].startswith("gen-"))
    q = teacher.encode_queries([g.query])[0]
    p = teacher._encode_passages([written[g.docids[g.positives]]])[0]
    assert g.scores[g.positives] == pytest.approx(float(p @ q), abs=1e-5)

    trained = run_train(TrainConfig(options={"model": minilm, "max_seq_length": 64}, negatives_per_query=3,
                                    max_steps=1, batch_size=2), work / "s", small_collection, work / "student",
                        cache_dir=small_cache)
    assert trained.manifest.counts["rows"] == 4

    run_index(IndexConfig(), small_collection, work / "student" / "model", work / "index", cache_dir=small_cache)
    ids = (work / "index" / "docids.txt").read_text(encoding="utf-8").split("\n")
    ids = [i for i in ids if i]
    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    assert len(ids) == len(corpus) and not set(ids) & set(written)
