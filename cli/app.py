"""``retrdistill``: the command line. Parses arguments, calls the library, prints results; nothing else."""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from retrdistill import registry
from retrdistill.errors import RetrdistillError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distil strong, slow retrieval models into fast ones: queries → mine → score → train → index → eval.")


def _choices(kind: str) -> type[Enum]:
    """An Enum of the registered names of one kind, so --help lists exactly what the registry holds."""
    return Enum(f"{kind.title().replace('_', '')}Choice", {n: n for n in registry.names(kind)}, type=str)


Miner = _choices("miner")
Teacher = _choices("teacher")
Loss = _choices("loss")
Student = _choices("student")
Indexer = _choices("indexer")
QuerySource = _choices("query_generator")

Opt = Annotated[Optional[list[str]], typer.Option("--option", "-o", help="Component option KEY=VALUE (value read as YAML); repeatable.")]
Cache = Annotated[Path, typer.Option(help="Cache folder (corpora, embeddings, BM25 indexes, teacher scores).")]
Force = Annotated[bool, typer.Option(help="Rebuild even if the artefact is current.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, warnings only.")]


def _setup(quiet: bool) -> None:
    from retrdistill import progress

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("sentence_transformers", "transformers", "faiss", "httpx", "datasets", "bm25s", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    progress.enable(not quiet)


def _options(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


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


@app.command()
def queries(
    collection: Annotated[Path, typer.Option(help="BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/).")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    source: Annotated[QuerySource, typer.Option(help="Where training queries come from.")] = "inverse-cloze",
    option: Opt = None,
    eval_split: Annotated[str, typer.Option(help="Split whose queries must never be trained on.")] = "test",
    allow_eval_queries: Annotated[bool, typer.Option(help="Force training on evaluation queries (invalidates evaluation).")] = False,
    cache_dir: Cache = Path(".cache/retrdistill"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Make training queries and their positives (a pseudo-query generator, a train split, or files)."""
    from retrdistill.stages.queries import QueriesConfig, run_queries

    _setup(quiet)
    cfg = _run(QueriesConfig, source=str(getattr(source, "value", source)), options=_options(option),
               eval_split=eval_split, allow_eval_queries=allow_eval_queries)
    _report(_run(run_queries, cfg, collection, out, cache_dir=cache_dir, force=force))


@app.command()
def mine(
    collection: Annotated[Path, typer.Option(help="BEIR-format folder.")],
    queries_dir: Annotated[Path, typer.Option("--queries", help="Output of `retrdistill queries`.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    miner: Annotated[Miner, typer.Option(help="Candidate retriever.")] = "bm25",
    option: Opt = None,
    depth: int = 100,
    negatives: int = 8,
    rank_min: int = 1,
    rank_max: int = 100,
    sampling: Annotated[str, typer.Option(help="random | top")] = "random",
    seed: int = 13,
    cache_dir: Cache = Path(".cache/retrdistill"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Mine candidate negatives for each training query."""
    from retrdistill.stages.mine import MineConfig, run_mine

    _setup(quiet)
    cfg = _run(MineConfig, miner=str(getattr(miner, "value", miner)), options=_options(option), depth=depth,
               negatives=negatives, rank_min=rank_min, rank_max=rank_max, sampling=sampling, seed=seed)
    _report(_run(run_mine, cfg, collection, queries_dir, out, cache_dir=cache_dir, force=force))


@app.command()
def score(
    collection: Annotated[Path, typer.Option(help="BEIR-format folder.")],
    candidates: Annotated[Path, typer.Option(help="Output of `retrdistill mine`.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    teacher: Annotated[Teacher, typer.Option(help="Teacher kind.")] = "bi-encoder",
    option: Opt = None,
    cache_dir: Cache = Path(".cache/retrdistill"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Score every (query, candidate) pair with a teacher; cached and resumable."""
    from retrdistill.stages.score import ScoreConfig, run_score

    _setup(quiet)
    cfg = _run(ScoreConfig, teacher=str(getattr(teacher, "value", teacher)), options=_options(option))
    _report(_run(run_score, cfg, collection, candidates, out, cache_dir=cache_dir, force=force))


@app.command()
def train(
    collection: Annotated[Path, typer.Option(help="BEIR-format folder.")],
    scores: Annotated[Path, typer.Option(help="Output of `retrdistill score`.")],
    out: Annotated[Path, typer.Option(help="Output folder (the checkpoint goes to OUT/model).")],
    student: Annotated[Student, typer.Option(help="Student kind.")] = "dense",
    option: Opt = None,
    loss: Annotated[Loss, typer.Option(help="Distillation loss.")] = "margin-mse",
    loss_option: Annotated[Optional[list[str]], typer.Option(help="Loss option KEY=VALUE; repeatable.")] = None,
    in_batch_negatives: Annotated[float, typer.Option(help="Weight of in-batch negatives (0: off).")] = 0.0,
    negatives_per_query: int = 4,
    epochs: float = 1.0,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    seed: int = 13,
    cache_dir: Cache = Path(".cache/retrdistill"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Train a student on the teacher's scores."""
    from retrdistill.stages.train import TrainConfig, run_train

    _setup(quiet)
    cfg = _run(TrainConfig, student=str(getattr(student, "value", student)), options=_options(option),
               loss=str(getattr(loss, "value", loss)), loss_options=_options(loss_option), in_batch_negatives=in_batch_negatives,
               negatives_per_query=negatives_per_query, epochs=epochs, batch_size=batch_size,
               learning_rate=learning_rate, seed=seed)
    _report(_run(run_train, cfg, scores, collection, out, cache_dir=cache_dir, force=force))


@app.command()
def index(
    collection: Annotated[Path, typer.Option(help="BEIR-format folder.")],
    model: Annotated[str, typer.Option(help="Encoder: a trained student folder, a local path, a hub name or offline:NAME.")],
    out: Annotated[Path, typer.Option(help="Index folder (e.g. indexes/NAME).")],
    indexer: Annotated[Indexer, typer.Option(help="Index family.")] = "faiss-flat",
    option: Opt = None,
    cache_dir: Cache = Path(".cache/retrdistill"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Encode the corpus and build a FAISS index (GPU when available)."""
    from retrdistill.stages.index import IndexConfig, run_index

    _setup(quiet)
    cfg = _run(IndexConfig, indexer=str(getattr(indexer, "value", indexer)), options=_options(option))
    _report(_run(run_index, cfg, collection, model, out, cache_dir=cache_dir, force=force))


@app.command("eval")
def eval_(
    out: Annotated[Path, typer.Option(help="Output folder (runs, results.json, leaderboard).")],
    system: Annotated[list[str], typer.Option(help="NAME=TYPE[:JSON options], e.g. 'BM25=bm25', 'student=index:{\"path\": \"indexes/x\"}'. Types: "
                                              + ", ".join(registry.names("system")))],
    collection: Annotated[Optional[Path], typer.Option(help="BEIR-format folder with qrels/<split>.tsv.")] = None,
    datasets: Annotated[Optional[list[Path]], typer.Option(
        help="Instead of --collection: a folder of BEIR-format collections (or one collection); repeatable. "
             "Writes OUT/datasets/<name>/ per dataset and OUT/leaderboard/ with per-dataset and mean rows.")] = None,
    split: str = "test",
    metric: Annotated[Optional[list[str]], typer.Option(help="Metric like ndcg@10; repeatable.")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="System the others are tested against.")] = None,
    cache_dir: Cache = Path(".cache/retrdistill"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate systems with ranx on one collection or many, and write the leaderboard."""
    from retrdistill.stages.evaluate import EvalConfig, run_eval, run_eval_datasets

    _setup(quiet)
    if (collection is None) == (not datasets):
        raise typer.BadParameter("give either --collection or --datasets (not both)")
    systems = []
    for spec in system:
        name, _, rest = spec.partition("=")
        kind, _, raw = rest.partition(":")
        systems.append({"name": name, "type": kind, "options": json.loads(raw) if raw else {}})
    kwargs = {"metrics": metric} if metric else {}
    cfg = _run(EvalConfig, split=split, systems=systems, baseline=baseline, **kwargs)
    if datasets:
        many = _run(run_eval_datasets, cfg, list(datasets), out, cache_dir=cache_dir, force=force)
        for result in [*many.datasets.values(), many.leaderboard]:
            _report(result)
        typer.echo((many.leaderboard.out_dir / "leaderboard.md").read_text(encoding="utf-8"))
        return
    result = _run(run_eval, cfg, collection, out, cache_dir=cache_dir, force=force)
    _report(result)
    typer.echo((result.out_dir / "leaderboard.md").read_text(encoding="utf-8"))


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="A pipeline YAML file, e.g. pipelines/msmarco-sample.yaml.")],
    force: Annotated[Optional[list[str]], typer.Option(help="Rebuild this stage even if current; repeatable.")] = None,
    only: Annotated[Optional[list[str]], typer.Option(help="Run only this stage; repeatable.")] = None,
    base_dir: Annotated[Optional[Path], typer.Option(help="Folder relative paths are resolved against (default: current).")] = None,
    quiet: Quiet = False,
) -> None:
    """Run a pipeline file, skipping stages whose artefacts already match their inputs and config."""
    from retrdistill.pipeline import load_pipeline, run_pipeline

    _setup(quiet)
    spec = _run(load_pipeline, pipeline, base_dir=base_dir)
    results = _run(run_pipeline, spec, force=set(force or []), only=set(only or []))
    typer.echo(f"\npipeline {spec.name}:")
    for r in results:
        state = "skipped (up to date)" if r.skipped else f"{r.seconds:8.1f}s"
        typer.echo(f"  {r.stage:<8} {state:>22}  {r.out_dir}")
    board = spec.out_dir("eval") / "leaderboard.md"
    if "eval" in spec.stages and board.is_file():
        typer.echo("\n" + board.read_text(encoding="utf-8"))
        typer.echo(f"leaderboard: {board} (also .json, .html)")


@app.command()
def leaderboard(
    results: Annotated[Path, typer.Argument(help="A leaderboard.json written by `retrdistill eval`.")],
    out: Annotated[Optional[Path], typer.Option(help="Folder for the rebuilt .md and .html (default: beside the JSON).")] = None,
) -> None:
    """Rebuild the Markdown and HTML leaderboard from a stored leaderboard.json."""
    from retrdistill.evaluation import leaderboard as lb

    board = _run(lb.load_leaderboard, results)
    folder = out or results.parent
    lb.write_markdown(board, folder / "leaderboard.md")
    lb.write_html(board, folder / "leaderboard.html")
    typer.echo((folder / "leaderboard.md").read_text(encoding="utf-8"))


@app.command("list")
def list_parts() -> None:
    """List every registered query source, miner, teacher, loss, student, indexer and eval system."""
    for kind, parts in registry.describe().items():
        typer.echo(f"{kind}:")
        for part in parts:
            typer.echo(f"  {part['name']:<16} {part['summary']}")


@app.command()
def models(
    fetch: Annotated[Optional[list[str]], typer.Option(help="Materialise this offline model now; repeatable.")] = None,
) -> None:
    """List the offline models (offline:NAME) and materialise them into the cache."""
    from retrdistill.models import OFFLINE_MODELS, materialise, models_dir

    for name in fetch or []:
        typer.echo(f"{name}: {_run(materialise, name)}")
    for name, spec in OFFLINE_MODELS.items():
        state = "ready" if (models_dir() / name / "config.json").is_file() else "not yet materialised"
        typer.echo(f"  offline:{name:<20} {state:<22} {spec.summary}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
