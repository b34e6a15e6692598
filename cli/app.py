"""``retrdistill``: the command line. Parses arguments, calls the library, prints results; nothing else."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from retrdistill import registry
from retrdistill.cli.config_options import Custom, OptionError, config_command
from retrdistill.errors import RetrdistillError
from retrdistill.stages.evaluate import EvalConfig
from retrdistill.stages.index import IndexConfig
from retrdistill.stages.mine import MineConfig
from retrdistill.stages.pick import PickConfig
from retrdistill.stages.queries import QueriesConfig
from retrdistill.stages.rate_teachers import RateTeachersConfig
from retrdistill.stages.score import ScoreConfig
from retrdistill.stages.select import SelectConfig
from retrdistill.stages.train import TrainConfig
from retrdistill.stages.translate import TranslateCollectionConfig, TranslateConfig

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distil strong, slow retrieval models into fast ones: queries → mine → score → train → index → eval.")


Cache = Annotated[Path, typer.Option(help="Cache folder (corpora, embeddings, BM25 indexes, teacher scores).")]
Force = Annotated[bool, typer.Option(help="Rebuild even if the artefact is current.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, warnings only.")]
Collection = Annotated[Path, typer.Option(help="BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/).")]
Out = Annotated[Path, typer.Option(help="Output folder.")]
DEFAULT_CACHE = Path(".cache/retrdistill")


def _setup(quiet: bool) -> None:
    from retrdistill import progress

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", handlers=[progress.LogHandler(sys.stderr)])  # log lines above the bars
    for noisy in ("sentence_transformers", "transformers", "faiss", "httpx", "datasets", "bm25s", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    progress.enable(not quiet)
    progress.silence_libraries(quiet)  # -q: no bar at all, the libraries' own (Loading weights, datasets) too


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except RetrdistillError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _report(result) -> None:
    state = "up to date, skipped" if result.skipped else f"done in {result.manifest.seconds:.1f}s"
    typer.echo(f"{result.stage}: {state} -> {result.out_dir}")
    typer.echo(json.dumps(result.manifest.counts, indent=2, default=str))


@config_command(app, QueriesConfig)
def queries(cfg: QueriesConfig, collection: Collection, out: Out, cache_dir: Cache = DEFAULT_CACHE,
            force: Force = False, quiet: Quiet = False) -> None:
    """Make training queries and their positives (a pseudo-query generator, a train split, or files)."""
    from retrdistill.stages.queries import run_queries

    _setup(quiet)
    _report(_run(run_queries, cfg, collection, out, cache_dir=cache_dir, force=force))


@config_command(app, MineConfig)
def mine(
    cfg: MineConfig,
    collection: Collection,
    queries_dir: Annotated[Path, typer.Option("--queries", help="Output of `retrdistill queries`.")],
    out: Out,
    cache_dir: Cache = DEFAULT_CACHE,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Mine candidate negatives for each training query."""
    from retrdistill.stages.mine import run_mine

    _setup(quiet)
    _report(_run(run_mine, cfg, collection, queries_dir, out, cache_dir=cache_dir, force=force))


@config_command(app, ScoreConfig)
def score(
    cfg: ScoreConfig,
    collection: Collection,
    candidates: Annotated[Path, typer.Option(help="Output of `retrdistill mine`.")],
    out: Out,
    cache_dir: Cache = DEFAULT_CACHE,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Score every (query, candidate) pair with a teacher; cached and resumable."""
    from retrdistill.stages.score import run_score

    _setup(quiet)
    _report(_run(run_score, cfg, collection, candidates, out, cache_dir=cache_dir, force=force))


@app.command()
def merge(
    shards: Annotated[list[Path], typer.Argument(help="The folders of shards 0..N-1 of one step run with --shard I/N.")],
    out: Out,
    collection: Annotated[Optional[Path], typer.Option(
        help="The shards' collection (BEIR folder): needed to merge eval shards, and llm query shards with a "
             "teacher filter.")] = None,
    cache_dir: Cache = DEFAULT_CACHE,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Combine the shards of a step run with --shard I/N (queries, mine, score, index, eval) into the artefact the
    unsharded step writes."""
    from retrdistill.stages.merge import run_merge

    _setup(quiet)
    _report(_run(run_merge, shards, out, cache_dir=cache_dir, collection_dir=collection, force=force))


@config_command(app, SelectConfig, name="select")
def select(
    cfg: SelectConfig,
    scores: Annotated[Path, typer.Option(help="Output of `retrdistill score` (every mined candidate scored).")],
    out: Out,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Filter (false negatives, rank windows, margins) and sample the scored candidates into training groups."""
    from retrdistill.stages.select import run_select

    _setup(quiet)
    _report(_run(run_select, cfg, scores, out, force=force))


@config_command(app, TranslateConfig, name="translate")
def translate(
    cfg: TranslateConfig,
    collection: Collection,
    scores: Annotated[Path, typer.Option(help="Output of `retrdistill score` (the teacher's English pairs).")],
    out: Out,
    cache_dir: Cache = DEFAULT_CACHE,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Translate the scored groups' queries (and/or passages) for the student; teacher scores unchanged, cached."""
    from retrdistill.stages.translate import run_translate

    _setup(quiet)
    _report(_run(run_translate, cfg, collection, scores, out, cache_dir=cache_dir, force=force))


@config_command(app, TranslateCollectionConfig, name="translate-collection")
def translate_collection(
    cfg: TranslateCollectionConfig,
    collection: Collection,
    out: Out,
    cache_dir: Cache = DEFAULT_CACHE,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """A cross-language test collection: the collection's queries translated, its corpus and qrels unchanged."""
    from retrdistill.stages.translate import run_translate_collection

    _setup(quiet)
    _report(_run(run_translate_collection, cfg, collection, out, cache_dir=cache_dir, force=force))


@config_command(app, TrainConfig)
def train(
    cfg: TrainConfig,
    collection: Collection,
    scores: Annotated[Path, typer.Option(help="Output of `retrdistill score`.")],
    out: Annotated[Path, typer.Option(help="Output folder (the checkpoint goes to OUT/model).")],
    cache_dir: Cache = DEFAULT_CACHE,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Train a student on the teacher's scores."""
    from retrdistill.stages.train import run_train

    _setup(quiet)
    _report(_run(run_train, cfg, scores, collection, out, cache_dir=cache_dir, force=force))


@config_command(app, IndexConfig)
def index(
    cfg: IndexConfig,
    collection: Collection,
    model: Annotated[str, typer.Option(help="Encoder: a trained student folder, a local path, a hub name or offline:NAME.")],
    out: Annotated[Path, typer.Option(help="Index folder (e.g. indexes/NAME).")],
    cache_dir: Cache = DEFAULT_CACHE,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Encode the corpus and build a FAISS index (GPU when available)."""
    from retrdistill.stages.index import run_index

    _setup(quiet)
    _report(_run(run_index, cfg, collection, model, out, cache_dir=cache_dir, force=force))


@config_command(app, PickConfig, name="pick")
def pick(
    cfg: PickConfig,
    students: Annotated[list[Path], typer.Option(
        "--students", "--student", help="A trained student: the folder of `retrdistill train` (or its model/), "
                                        "trained with validation; repeatable, two at least.")],
    out: Annotated[Path, typer.Option(help="Output folder: a copy of the winner (OUT/model) and pick.json.")],
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Pick the best of several trained students by their recorded validation metric (a copy of the winner)."""
    from retrdistill.stages.pick import prepare_pick

    _setup(quiet)
    _report(_run(lambda: prepare_pick(cfg, students, out).run(force=force)))


CANDIDATE_FORM = "NAME=TEACHER[:JSON object of options]"


def parse_candidate(spec: str) -> dict:
    """One ``--candidate NAME=TEACHER[:JSON]`` as ``{"name", "teacher", "options"}``; OptionError naming what is
    wrong."""
    name, teacher, options = parse_named_part(
        spec, "--candidate", "teacher", "teacher", CANDIDATE_FORM,
        "'BM25=bm25' or 'MiniLM=bi-encoder:{\"model\": \"offline:all-MiniLM-L6-v2\"}'")
    return {"name": name, "teacher": teacher, "options": options}


CANDIDATES = Custom(
    annotation=Optional[list[str]],
    option=typer.Option("--candidate", "--candidates", help=f"A candidate teacher, {CANDIDATE_FORM}; repeatable, two "
                        "at least. Teachers: " + ", ".join(registry.names("teacher"))),
    convert=lambda specs: [parse_candidate(spec) for spec in specs] if specs else None,
)


@config_command(app, RateTeachersConfig, name="rate-teachers", custom={"candidates": CANDIDATES})
def rate_teachers(
    cfg: RateTeachersConfig,
    collection: Collection,
    queries: Annotated[Path, typer.Option(help="Probe queries with known positives (output of `retrdistill queries`, "
                                               "e.g. inverse cloze), never the test queries.")],
    out: Annotated[Path, typer.Option(help="Output folder (choice.json: estimates, the pick or the weights).")],
    cache_dir: Cache = DEFAULT_CACHE,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Estimate candidate teachers on the corpus without labels (probe queries, agreement); pick one or weight
    them."""
    from retrdistill.stages.rate_teachers import run_rate_teachers

    _setup(quiet)
    _report(_run(run_rate_teachers, cfg, collection, queries, out, cache_dir=cache_dir, force=force))


SYSTEM_FORM = "NAME=TYPE[:JSON object of options]"


def parse_systems(specs: list[str] | None) -> list[dict] | None:
    """``--system`` values as EvalConfig.systems; None when none were given (the config's default stays)."""
    return [parse_system(spec) for spec in specs] if specs else None


def parse_system(spec: str) -> dict:
    """One ``NAME=TYPE[:JSON]`` value as ``{"name", "type", "options"}``; OptionError naming what is wrong."""
    name, kind, options = parse_named_part(spec, "--system", "system", "type", SYSTEM_FORM,
                                           "'BM25=bm25' or 'student=index:{\"path\": \"indexes/x\"}'")
    return {"name": name, "type": kind, "options": options}


def parse_named_part(spec: str, flag: str, kind: str, noun: str, form: str, example: str) -> tuple[str, str, dict]:
    """``NAME=PART[:JSON options]`` as ``(name, part, options)``, PART a registered name of ``kind`` (called
    ``noun`` in messages); OptionError naming the flag, the value, what is wrong and the expected form otherwise."""
    parts = registry.names(kind)

    def bad(problem: str) -> OptionError:
        return OptionError(f"{flag} {spec!r}: {problem}; expected {form}, e.g. {example}, with {noun.upper()} one of: "
                           f"{', '.join(parts)}")

    name, sep, rest = spec.partition("=")
    if not sep:
        raise bad("no '='")
    if not name.strip():
        raise bad("the name is empty")
    part, _, raw = rest.partition(":")
    if part.strip() not in parts:
        raise bad(f"unknown {noun} {part.strip()!r}")
    try:
        options = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise bad(f"the options are not valid JSON ({exc})") from None
    if not isinstance(options, dict):
        raise bad(f"the options must be a JSON object, got {type(options).__name__}")
    return name.strip(), part.strip(), options


SYSTEMS = Custom(
    annotation=Optional[list[str]],
    option=typer.Option("--system", "--systems", help=f"A system to evaluate, {SYSTEM_FORM}, e.g. 'BM25=bm25', "
                        "'student=index:{\"path\": \"indexes/x\"}'; repeatable. Types: " + ", ".join(registry.names("system")),
                        show_default="BM25=bm25"),
    convert=parse_systems,
)


@config_command(app, EvalConfig, name="eval", custom={"systems": SYSTEMS})
def eval_(
    cfg: EvalConfig,
    out: Annotated[Path, typer.Option(help="Output folder (runs, results.json, leaderboard).")],
    collection: Annotated[Optional[Path], typer.Option(
        help="BEIR-format folder with qrels/<split>.tsv (or --datasets instead).")] = None,
    cache_dir: Cache = DEFAULT_CACHE,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate systems with ranx on one collection or many (--datasets), and write the leaderboard."""
    from retrdistill.stages.evaluate import run_eval, run_eval_datasets

    _setup(quiet)
    if (collection is None) == (not cfg.datasets):
        raise typer.BadParameter("give either --collection or --datasets (not both)")
    if cfg.datasets:
        many = _run(run_eval_datasets, cfg, list(cfg.datasets), out, cache_dir=cache_dir, force=force)
        for result in [*many.datasets.values(), many.leaderboard]:
            _report(result)
        typer.echo((many.leaderboard.out_dir / "leaderboard.md").read_text(encoding="utf-8"))
        return
    result = _run(run_eval, cfg, collection, out, cache_dir=cache_dir, force=force)
    _report(result)
    typer.echo((result.out_dir / "leaderboard.md").read_text(encoding="utf-8"))


@app.command("export-anserini")
def export_anserini_(
    source: Annotated[str, typer.Argument(help="A sparse index folder (index --indexer sparse), or a sparse model "
                                               "with --collection.")],
    out: Annotated[Path, typer.Argument(help="Output folder: vectors/*.jsonl, anserini.json, manifest.")],
    collection: Annotated[Optional[Path], typer.Option(help="BEIR folder whose corpus a model SOURCE encodes.")] = None,
    factor: Annotated[float, typer.Option(help="Weights become round(w * factor); SPLADE's usual is 100.")] = 100.0,
    terms: Annotated[str, typer.Option(help="Lucene terms: tokens (the vocabulary's) or ids.")] = "tokens",
    doc_ids: Annotated[str, typer.Option(help="Ids: corpus (the corpus's) or rows (zero-padded rows).")] = "corpus",
    max_seq_length: Annotated[Optional[int], typer.Option(help="A model's token limit per passage.")] = None,
    max_active_dims: Annotated[Optional[int], typer.Option(help="A model's top terms kept per passage.")] = None,
    cache_dir: Cache = DEFAULT_CACHE,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Export a sparse (SPLADE) index as Anserini's JsonVectorCollection, for Lucene impact search."""
    from retrdistill.lucene.export import export_anserini

    _setup(quiet)
    result = _run(export_anserini, source, out, collection=collection, cache_dir=cache_dir, factor=factor,
                  terms=terms, doc_ids=doc_ids, max_seq_length=max_seq_length, max_active_dims=max_active_dims,
                  force=force)
    _report(result)


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="A pipeline YAML file, e.g. pipelines/msmarco-sample.yaml.")],
    plan: Annotated[bool, typer.Option("--plan", help="Print the step graph and what would run and why; run nothing.")] = False,
    force: Annotated[Optional[list[str]], typer.Option(help="Rebuild this step (by id) even if current; repeatable.")] = None,
    only: Annotated[Optional[list[str]], typer.Option(help="Run only this step (by id); repeatable.")] = None,
    collection: Annotated[Optional[Path], typer.Option(
        help="Use this BEIR-format folder instead of the file's collection (steps with their own keep theirs).")] = None,
    workdir: Annotated[Optional[Path], typer.Option(help="Write the steps' artefacts here instead of the file's "
                                                         "workdir.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="STEP.KEY=VALUE",
        help="Change one value of a step, read as YAML and checked like the file's: e.g. "
             "student.learning_rate=5e-5, candidates.options.model=offline:all-MiniLM-L6-v2, "
             "eval.systems[0].name=BM25; repeatable.")] = None,
    base_dir: Annotated[Optional[Path], typer.Option(
        help="A project folder that the file's relative paths (resolved against the file's folder) must stay "
             "inside; keys are written relative to it.")] = None,
    quiet: Quiet = False,
) -> None:
    """Run a pipeline file's steps in dependency order, skipping those whose artefacts are current.

    Relative paths in the file resolve against its folder; --collection and --workdir against the current one."""
    from retrdistill.pipeline import check_judgments, load_pipeline, plan_pipeline, run_pipeline
    from retrdistill.stages.evaluate import leaderboard_file

    _setup(quiet)
    spec = _run(load_pipeline, pipeline, base_dir=base_dir, collection=collection, workdir=workdir,
                overrides=list(set_ or []))
    width = max(20, *(len(step_id) for step_id in spec.steps))
    _run(check_judgments, spec, only=set(only or []))
    if plan:
        typer.echo(f"pipeline {spec.name} ({len(spec.steps)} steps, artefacts in {spec.workdir}):")
        for p in _run(plan_pipeline, spec, force=set(force or []), only=set(only or [])):
            after = f" <- {', '.join('@' + u for u in p.upstream)}" if p.upstream else ""
            typer.echo(f"  {p.id:<{width}} {p.stage:<9} {p.state:<13} {p.why}{after}")
        return
    results = _run(run_pipeline, spec, force=set(force or []), only=set(only or []))
    typer.echo(f"\npipeline {spec.name}:")
    typer.echo(f"  {'step':<{width}} {'stage':<9} {'state':<8} {'seconds':>9} {'peak RSS MB':>12} {'peak anon MB':>13}")
    for r in results:
        mem = r.memory
        state = "skipped" if r.skipped else "ran"
        seconds = "-" if r.skipped else f"{r.seconds:.1f}"
        typer.echo(f"  {r.id:<{width}} {r.stage:<9} {state:<8} {seconds:>9} {_mb(mem.get('peak_rss_mb')):>12} "
                   f"{_mb(mem.get('peak_anon_mb')):>13}")
    for r in results:
        if r.stage == "eval":
            board = leaderboard_file(spec.out_dir(r.id))
            if board.is_file():
                typer.echo("\n" + board.read_text(encoding="utf-8"))
                typer.echo(f"leaderboard: {board} (also .json, .html)")


def _mb(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


@app.command()
def leaderboard(
    results: Annotated[Path, typer.Argument(help="A leaderboard.json written by `retrdistill eval`.")],
    out: Annotated[Optional[Path], typer.Option(help="Folder for the rebuilt .md and .html (default: beside the JSON).")] = None,
) -> None:
    """Rebuild the Markdown and HTML leaderboard from a stored leaderboard.json."""
    from retrdistill.evaluation import leaderboard as lb
    from retrdistill.evaluation.leaderboard_html import write_html

    board = _run(lb.load_leaderboard, results)
    folder = out or results.parent
    lb.write_markdown(board, folder / "leaderboard.md")
    write_html(board, folder / "leaderboard.html")
    typer.echo((folder / "leaderboard.md").read_text(encoding="utf-8"))


@app.command("mining-report")
def mining_report_(
    artefacts: Annotated[list[str], typer.Argument(help="NAME=FOLDER of candidates, scores or select artefacts.")],
    out: Annotated[Optional[Path], typer.Option(help="Also write the report as JSON here.")] = None,
) -> None:
    """Negatives side by side: per artefact its counts and filter drops, and the overlap of their negatives."""
    from retrdistill.artefacts import atomic_path
    from retrdistill.evaluation.mining import mining_report

    folders = {}
    for spec in artefacts:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise typer.BadParameter(f"{spec!r}: expected NAME=FOLDER")
        folders[name] = Path(folder)
    report = _run(mining_report, folders)
    names = list(folders)
    typer.echo(f"{'artefact':<24} {'queries':>8} {'neg/query':>9}  flagged")
    for name, a in report["artefacts"].items():
        flagged = ", ".join(f"{k} {v}" for k, v in (a.get("flagged") or {}).items()) or "-"
        typer.echo(f"{name:<24} {a['queries']:>8} {a['negatives_per_query']:>9}  {flagged}")
    typer.echo("\noverlap of negatives (mean Jaccard per shared query):")
    typer.echo(" " * 24 + "".join(f"{n[:12]:>13}" for n in names))
    for a in names:
        cells = "".join(f"{'-' if v is None else f'{v:.3f}':>13}" for v in report["overlap_jaccard"][a].values())
        typer.echo(f"{a:<24}{cells}")
    if out is not None:
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(report, indent=2), encoding="utf-8")


@app.command("serve-llm")
def serve_llm(
    model: Annotated[str, typer.Argument(help="A hub name, a model folder or offline:NAME (a local causal LM).")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    name: Annotated[Optional[str], typer.Option(help="The model name clients ask for (default: MODEL).")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together at most.")] = 8,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, ... (default: cuda when available).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for the model (default: torch's).")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted (larger: 413).", min=1)] = 8 << 20,
    max_prompts: Annotated[int, typer.Option(help="Most prompts one /v1/completions request may carry.", min=1)] = 256,
    quiet: Quiet = False,
) -> None:
    """Serve a local LLM over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models)."""
    from retrdistill.llm.server import serve

    _setup(quiet)
    options = {"batch_size": batch_size, "dtype": dtype, "device": device}
    _run(serve, model, host=host, port=port, name=name, options=options, threads=threads,
         max_body_bytes=max_body_bytes, max_prompts=max_prompts)


@app.command("list")
def list_parts() -> None:
    """List every registered query source, miner, teacher, loss, student, indexer, model family and eval system."""
    for kind, parts in registry.describe().items():
        typer.echo(f"{kind}:")
        for part in parts:
            typer.echo(f"  {part['name']:<16} {part['summary']}")


@app.command()
def models(
    fetch: Annotated[Optional[list[str]], typer.Option(help="Materialise this offline model now; repeatable.")] = None,
) -> None:
    """List the offline models (offline:NAME): size on disk when materialised, licence, summary; --fetch
    materialises one into the cache."""
    from retrdistill.models import OFFLINE_MODELS, materialise, models_dir

    for name in fetch or []:
        typer.echo(f"{name}: {_run(materialise, name)}")
    typer.echo(f"offline models in {models_dir()}:")
    for name, spec in OFFLINE_MODELS.items():
        size = spec.size_on_disk()
        state = "not materialised" if size is None else f"{size / 2**20:,.1f} MiB"
        typer.echo(f"  offline:{name:<28} {state:<17} {spec.licence}")
        typer.echo(f"      {spec.summary}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
