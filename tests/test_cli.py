"""The command line: every stage config field is an option of its command and reaches the config; bad values
are one-line errors with exit code 2; stages run from the CLI on real data; corpus encoding reports per batch."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import pytest
import typer
from typer.testing import CliRunner

from retrdistill import progress, registry
from retrdistill.artefacts import read_manifest
from retrdistill.cli.app import app
from retrdistill.cli.config_options import REGISTRY_FIELDS, OptionError, config_command, parse_config
from retrdistill.stages.evaluate import EvalConfig
from retrdistill.stages.index import IndexConfig
from retrdistill.stages.mine import MineConfig
from retrdistill.stages.queries import QueriesConfig
from retrdistill.stages.score import ScoreConfig
from retrdistill.stages.select import SelectConfig
from retrdistill.stages.train import TrainConfig
from retrdistill.stages.translate import TranslateConfig

runner = CliRunner()
WIDE = {"COLUMNS": "400", "TERMINAL_WIDTH": "400"}

# each stage command, its config, and the path options it needs to parse at all
COMMANDS = {
    "queries": (QueriesConfig, ["--collection", "c", "--out", "o"]),
    "mine": (MineConfig, ["--collection", "c", "--queries", "q", "--out", "o"]),
    "score": (ScoreConfig, ["--collection", "c", "--candidates", "d", "--out", "o"]),
    "train": (TrainConfig, ["--collection", "c", "--scores", "s", "--out", "o"]),
    "index": (IndexConfig, ["--collection", "c", "--model", "m", "--out", "o"]),
    "eval": (EvalConfig, ["--collection", "c", "--out", "o"]),
    "select": (SelectConfig, ["--scores", "s", "--out", "o"]),
    "translate": (TranslateConfig, ["--collection", "c", "--scores", "s", "--out", "o"]),
}
STAGE_FIELDS = [(cmd, f.name) for cmd, (cls, _) in COMMANDS.items() for f in dataclasses.fields(cls)]

# values the configs' own validation constrains; every other field gets a value made from its annotation
VALUES: dict[tuple[str, str], Any] = {
    ("mine", "sampling"): "top",
    ("eval", "stat_test"): "student",
    ("eval", "correction"): "bonferroni",
    ("eval", "baseline"): "BM25",
    ("eval", "metrics"): ["ndcg@5", "recall@10"],
    ("train", "embedding_options"): {"distance": "cosine"},
    ("train", "validation"): {"fraction": 0.2, "metric": "teacher-ndcg@10", "every": 5},
    ("train", "teacher_scale"): {"mode": "factor", "factor": 20.0},
    ("score", "shard"): "1/4",
    ("queries", "shard"): "0/2",
    ("mine", "shard"): "2/3",
    ("index", "shard"): "1/2",
    ("eval", "shard"): "3/4",
    ("index", "backend"): "onnx-int8",
    ("train", "micro_batch_size"): 8,  # must divide batch_size (32)
    ("select", "sampling"): "spread",
    ("select", "order"): "teacher",
    ("translate", "side"): "both",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _cli_value(command: str, f: dataclasses.Field, hint: Any) -> tuple[list[str], Any]:
    """Arguments setting field ``f`` to a value other than its default, and the value the config must hold."""
    flag = _flag(f.name)
    if (command, f.name) == ("eval", "systems"):
        return (["--system", "BM25=bm25", "--system", 'base=dense:{"model": "offline:all-MiniLM-L6-v2"}'],
                [{"name": "BM25", "type": "bm25", "options": {}},
                 {"name": "base", "type": "dense", "options": {"model": "offline:all-MiniLM-L6-v2"}}])
    if (command, f.name) == ("select", "filters"):  # a list of mappings: one option, read as YAML
        return (["--filters", "[{filter: margin, options: {margin: 0.1}}, {filter: positive-rank}]"],
                [{"filter": "margin", "options": {"margin": 0.1}}, {"filter": "positive-rank"}])
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    kind = REGISTRY_FIELDS.get(f.name, f.name)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    inner = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint
    value = VALUES.get((command, f.name))
    if value is None:
        if kind in registry.KINDS:
            value = next(n for n in registry.names(kind) if n != default)
        elif inner is bool:
            return ([f"--no-{flag[2:]}"] if default else [flag]), not default
        elif inner is int:
            value = 3 if default is None else default + 2
        elif inner is float:
            value = default + 0.25
        elif inner is str:
            value = "dev"
        elif typing.get_origin(inner) is list and typing.get_args(inner)[0] is int:
            value = [8, 4]
        elif typing.get_origin(inner) is list and typing.get_args(inner)[0] is str:
            value = ["first", "second"]
        elif typing.get_origin(inner) is dict:
            value = {"alpha": 1, "beta": "two words", "gamma": [1, 2]}
        else:
            pytest.fail(f"no CLI test value for {command}.{f.name} ({hint}): add one to VALUES")
    if isinstance(value, list):
        return [part for item in value for part in (flag, str(item))], value
    if isinstance(value, dict):
        pairs = {"alpha": "alpha=1", "beta": "beta=two words", "gamma": "gamma=[1, 2]"}
        return [part for key, v in value.items() for part in (flag, pairs.get(key, f"{key}={v}"))], value
    return [flag, str(value)], value


@pytest.mark.parametrize("command, name", STAGE_FIELDS)
def test_every_config_field_is_an_option_of_its_command(command, name):
    cmd = typer.main.get_command(app).commands[command]
    options = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    assert _flag(name) in options, f"retrdistill {command} has no {_flag(name)}"


@pytest.mark.parametrize("command, name", STAGE_FIELDS)
def test_every_cli_value_reaches_the_config(command, name):
    cls, base = COMMANDS[command]
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    args, expected = _cli_value(command, f, typing.get_type_hints(cls)[name])
    assert getattr(cls(), name) != expected, "the test value must differ from the default"
    cfg = parse_config(app, command, base + args)
    assert type(cfg) is cls
    assert getattr(cfg, name) == expected
    untouched = {g.name for g in dataclasses.fields(cls)} - {name, "metrics"}  # metrics: normalised by EvalConfig
    assert {n: getattr(cfg, n) for n in untouched} == {n: getattr(cls(), n) for n in untouched}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_options_give_the_config_defaults(command):
    cls, base = COMMANDS[command]
    assert parse_config(app, command, base) == cls()


def test_train_help_lists_every_train_field():
    result = runner.invoke(app, ["train", "--help"], env=WIDE)
    assert result.exit_code == 0
    for name in ("max_steps", "warmup_ratio", "weight_decay", "loss_weight", "embedding_distill",
                 "embedding_options", "matryoshka_dims", "truncate_dim", "save_untrained"):
        assert _flag(name) in result.output, name
    assert "--no-save-untrained" in result.output  # a bool field is a --x/--no-x flag
    assert "Peak learning rate." in result.output  # help from the field's metadata
    assert "Weight of the score loss" in result.output  # help from the field's comment


def test_dict_option_values_are_yaml_and_keep_their_short_names():
    cfg = parse_config(app, "score", COMMANDS["score"][1] + ["-o", "model=offline:all-MiniLM-L6-v2", "--option",
                                                              "max_length=128", "-o", "fields=[title, text]"])
    assert cfg.options == {"model": "offline:all-MiniLM-L6-v2", "max_length": 128, "fields": ["title", "text"]}
    cfg = parse_config(app, "train", COMMANDS["train"][1] + ["--loss-option", "temperature=0.05"])
    assert cfg.loss_options == {"temperature": 0.05}


@pytest.mark.parametrize("args, message", [
    (["--warmup-ratio", "1.5"], "invalid train config: warmup_ratio is a fraction of the training steps in [0, 1), got 1.5"),
    (["--matryoshka-dims", "0"], "invalid train config: matryoshka_dims must be positive widths"),
    (["--loss-weight", "0"], "invalid train config: every loss weight is 0"),
    (["-o", "model"], "--option 'model': expected KEY=VALUE"),
    (["--loss-option", "=0.1"], "--loss-option '=0.1': expected KEY=VALUE"),
    (["--embedding-option", "distance=[unclosed"], "--embedding-option 'distance=[unclosed': the value is not valid YAML"),
    (["--embedding-option", "distanse=l2"], "unknown option(s) distanse for embedding_options"),
])
def test_a_refused_value_is_a_one_line_error_with_exit_code_2(tmp_path, args, message):
    out = tmp_path / "student"
    result = runner.invoke(app, ["train", "--collection", str(tmp_path), "--scores", str(tmp_path), "--out", str(out),
                                 *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert message in result.output
    assert not out.exists()
    with pytest.raises(OptionError):
        parse_config(app, "train", COMMANDS["train"][1] + args)


def test_a_name_outside_the_registry_is_refused_with_the_choices():
    result = runner.invoke(app, ["mine", *COMMANDS["mine"][1], "--miner", "lucene"], env=WIDE)
    assert result.exit_code == 2
    assert "lucene" in result.output and all(name in result.output for name in registry.names("miner"))


SYSTEM_TYPES = registry.names("system")


@pytest.mark.parametrize("spec, problem", [
    ("BM25", "no '='"),
    ("=bm25", "the name is empty"),
    ("  =bm25", "the name is empty"),
    ("x=lucene", "unknown type 'lucene'"),
    ("x=", "unknown type ''"),
    ('x=dense:{"model": ', "the options are not valid JSON"),
    ("x=dense:{model: m}", "the options are not valid JSON"),
    ('x=dense:["m"]', "the options must be a JSON object, got list"),
    ('x=dense:"m"', "the options must be a JSON object, got str"),
])
def test_a_malformed_system_is_a_clear_error(tmp_path, spec, problem):
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "--collection", str(tmp_path), "--out", str(out), "--system", "BM25=bm25",
                                 "--system", spec])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # handled, not a traceback
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: ")
    assert f"--system {spec!r}: {problem}" in line
    assert "expected NAME=TYPE[:JSON object of options]" in line
    assert f"TYPE one of: {', '.join(SYSTEM_TYPES)}" in line
    assert not out.exists()


def test_systems_and_metrics_reach_the_eval_config():
    fused = {"systems": ["BM25", "base"], "method": "rrf"}
    cfg = parse_config(app, "eval", ["--datasets", "beir", "--out", "o", "--system", "BM25=bm25", "--system",
                                     'base=dense:{"model": "m"}', "--system", f"fused=fusion:{json.dumps(fused)}",
                                     "--baseline", "BM25", "--metric", "ndcg@10", "--metric", "map"])
    assert cfg.systems == [{"name": "BM25", "type": "bm25", "options": {}},
                           {"name": "base", "type": "dense", "options": {"model": "m"}},
                           {"name": "fused", "type": "fusion", "options": fused}]
    assert cfg.metrics == ["ndcg@10", "map"] and cfg.datasets == ["beir"] and cfg.baseline == "BM25"


def test_stages_run_one_by_one_from_the_cli(small_collection, tmp_path):
    cache = tmp_path / "cache"
    common = ["--collection", str(small_collection), "--cache-dir", str(cache), "--quiet"]
    queries = tmp_path / "queries"
    result = runner.invoke(app, ["queries", *common, "--out", str(queries), "-o", "num_queries=7", "-o", "seed=3"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(queries)
    assert manifest.settings["options"] == {"num_queries": 7, "seed": 3}  # as given; keyed by the source's fingerprint
    assert manifest.counts["queries"] == 7
    candidates = tmp_path / "candidates"
    result = runner.invoke(app, ["mine", *common, "--queries", str(queries), "--out", str(candidates),
                                 "--depth", "20", "--negatives", "3", "--rank-max", "20", "--sampling", "top"])
    assert result.exit_code == 0, result.output
    config = read_manifest(candidates).config
    assert (config["depth"], config["negatives"], config["rank_max"], config["sampling"]) == (20, 3, 20, "top")
    again = runner.invoke(app, ["mine", *common, "--queries", str(queries), "--out", str(candidates),
                                "--depth", "20", "--negatives", "3", "--rank-max", "20", "--sampling", "top"])
    assert again.exit_code == 0 and "up to date, skipped" in again.output


# ------------------------------------------------------------------------------------------------ the layer itself
@dataclass
class ToyConfig:
    name: str  # required, no default
    alpha: float = 0.5  # weight of alpha
    limit: Optional[int] = None
    verbose: bool = True
    tags: list[str] = field(default_factory=lambda: ["a", "b"], metadata={"help": "Tag to attach."})
    extra: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, int] = (2, 3)

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError("alpha cannot be negative")


toy = typer.Typer()
seen: list[ToyConfig] = []


@config_command(toy, ToyConfig, name="go")
def go(cfg: ToyConfig, out: str = "x") -> None:
    seen.append(cfg)
    typer.echo(f"out={out}")


@toy.command()
def other() -> None:  # a second command, so "go" stays a subcommand
    pass


def test_the_layer_maps_each_annotation_to_an_option():
    seen.clear()
    result = runner.invoke(toy, ["go", "--name", "n", "--alpha", "1.5", "--limit", "4", "--no-verbose", "--tag", "z",
                                 "--tags", "y", "--extra", "k=[1, 2]", "--shape", "[4, 5]", "--out", "here"])
    assert result.exit_code == 0, result.output
    assert "out=here" in result.output
    assert seen == [ToyConfig(name="n", alpha=1.5, limit=4, verbose=False, tags=["z", "y"], extra={"k": [1, 2]},
                              shape=[4, 5])]
    seen.clear()
    assert runner.invoke(toy, ["go", "--name", "n"]).exit_code == 0
    assert seen == [ToyConfig(name="n")]  # absent list/dict options keep the dataclass defaults


def test_the_layer_requires_fields_without_default_and_validates_through_the_dataclass():
    seen.clear()
    missing = runner.invoke(toy, ["go"])
    assert missing.exit_code == 2 and "--name" in missing.output
    refused = runner.invoke(toy, ["go", "--name", "n", "--alpha", "-1"])
    assert refused.exit_code == 2 and refused.output == "error: invalid toy config: alpha cannot be negative\n"
    assert seen == []


def test_the_layer_takes_help_from_metadata_and_comments():
    result = runner.invoke(toy, ["go", "--help"], env=WIDE)
    assert result.exit_code == 0
    assert "Weight of alpha." in result.output and "Tag to attach. Repeatable." in result.output
    assert "--no-verbose" in result.output and "a b" in result.output  # the factory default is shown


# ------------------------------------------------------------------------------------------------ encoding progress
class Killed(Exception):
    pass


class _SpyBar:
    """The real progress bar, recording what it is told."""

    def __init__(self, real: Any, initial: int, total: int, fail_after: int | None) -> None:
        self.real, self.initial, self.total, self.fail_after = real, initial, total, fail_after
        self.updates: list[int] = []

    def update(self, n: int = 1) -> None:
        self.updates.append(n)
        self.real.update(n)
        if self.fail_after is not None and sum(self.updates) > self.fail_after:
            raise Killed("as if the run was killed here")

    def close(self) -> None:
        self.real.close()


@pytest.fixture
def spy_bars(monkeypatch):
    bars: list[_SpyBar] = []
    real_bar = progress.bar
    state = {"fail_after": None}

    def bar(total, desc, unit="it", initial=0):
        spy = _SpyBar(real_bar(total, desc, unit, initial=initial), initial, total, state["fail_after"])
        bars.append(spy)
        return spy

    was = progress.enabled()
    progress.enable()
    monkeypatch.setattr(progress, "bar", bar)
    yield bars, state
    progress.enable(was)


def test_corpus_encoding_progress_advances_per_batch_and_resumes(sample_dir, tmp_path, spy_bars):
    from retrdistill.data.beir import load_corpus
    from retrdistill.encoding.corpus import EncodeSettings, corpus_embeddings
    from retrdistill.encoding.engine import engine_options

    bars, state = spy_bars
    n = 320  # a few hundred real passages: one shard at the default shard size
    lines = (sample_dir / "corpus.jsonl").read_text(encoding="utf-8").split("\n")[:n]
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = load_corpus(tmp_path / "corpus.jsonl", tmp_path / "corpora")
    assert len(corpus) == n
    with engine_options(max_rows=16):  # batches of 16 on any device
        store = corpus_embeddings("offline:tiny-bert-mlm", corpus, tmp_path / "one",
                                  EncodeSettings(batch_size=16, max_seq_length=128))
    assert store.embeddings.shape[0] == n
    (bar,) = bars
    assert bar.initial == 0 and bar.total == n
    assert len(bar.updates) >= n // 16  # per batch, not once per shard
    assert sum(bar.updates) == n

    # killed in the second shard, then resumed: the bar starts at the finished shard
    bars.clear()
    settings = EncodeSettings(batch_size=16, max_seq_length=128, shard_size=128)
    state["fail_after"] = 128 + 40
    with engine_options(max_rows=16), pytest.raises(Killed):
        corpus_embeddings("offline:tiny-bert-mlm", corpus, tmp_path / "resume", settings)
    state["fail_after"] = None
    with engine_options(max_rows=16):
        resumed = corpus_embeddings("offline:tiny-bert-mlm", corpus, tmp_path / "resume", settings)
    first, second = bars
    assert first.initial == 0 and second.initial == 128 and second.total == n
    assert sum(second.updates) == n - 128 and len(second.updates) >= (n - 128) // 16
    assert resumed.embeddings.shape == store.embeddings.shape
