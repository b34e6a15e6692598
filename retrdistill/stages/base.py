"""What every stage shares: the work a step is asked to do, skip-if-current, an atomic output folder, the
manifest written last with the step's cost (wall time, peak memory).

A stage is two calls: ``prepare_X(...) -> Work`` says what would be done (config, input fingerprints, output
folder) without doing it, so a pipeline can plan; ``Work.run()`` does it unless the folder already holds it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrdistill.artefacts import (
    FORMAT_VERSION,
    Manifest,
    artefact_lock,
    atomic_dir,
    fingerprint_path,
    keyed_versions,
    library_versions,
    portable,
    read_manifest,
    stage_key,
    verify_outputs,
    write_manifest,
)
from retrdistill.errors import ManifestError
from retrdistill.memory import PeakMemory

log = logging.getLogger(__name__)
VERSIONED = ("torch", "sentence-transformers", "transformers", "faiss-cpu", "bm25s", "ranx", "datasets", "numpy")


@dataclass
class StageResult:
    stage: str
    out_dir: Path
    manifest: Manifest
    skipped: bool

    @property
    def seconds(self) -> float:
        return 0.0 if self.skipped else self.manifest.seconds

    @property
    def memory(self) -> dict[str, Any]:
        return dict(self.manifest.memory)


def config_dict(cfg: Any) -> dict[str, Any]:
    """The config as a dict; a field whose metadata sets ``omit_default`` is left out while it holds its
    default, so adding such an optional field keeps the keys of artefacts written before it existed."""
    if not dataclasses.is_dataclass(cfg):
        return dict(cfg)
    out = dataclasses.asdict(cfg)
    for f in dataclasses.fields(cfg):
        if f.metadata.get("omit_default") and out.get(f.name) == _field_default(f):
            out.pop(f.name)
    return out


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def file_input(path: str | Path) -> str:
    return fingerprint_path(path)


@dataclass
class Work:
    """What one step is asked to do: write a ``kind`` artefact to ``out_dir`` from ``inputs`` under ``config``."""

    stage: str
    kind: str
    out_dir: Path
    config: dict[str, Any]
    inputs: dict[str, str]  # input name -> fingerprint
    body: Callable[[Path], dict[str, Any]]  # writes the files into a temporary folder, returns counts
    step: str = ""  # the pipeline step id, recorded in the manifest (not part of the key)
    distributed: bool = False  # under torchrun, every rank runs the body (rank 0 alone writes the artefact)
    # the config as given (output-neutral options too), recorded in the manifest as ``settings``; not keyed
    settings: dict[str, Any] | None = None
    # the project folder: absolute paths under it (or under the workdir, ``out_dir``'s parent) are keyed relative
    # to it, so a copied or moved project keeps its keys; None: the current directory
    base: Path | None = None

    def __post_init__(self) -> None:
        from retrdistill.kinds import kind

        kind(self.kind)  # every artefact a step writes is of a declared kind (retrdistill.kinds.KINDS)
        self.out_dir = Path(self.out_dir)

    @property
    def keyed_config(self) -> dict[str, Any]:
        """The config as keyed and recorded: absolute paths inside the workdir or the project folder made
        relative (``@workdir/...`` and ``./...``)."""
        base = Path(self.base) if self.base is not None else Path.cwd()
        places = [(self.out_dir.parent.resolve(), "@workdir/"), (base.resolve(), "./")]
        return _jsonable(portable(self.config, places))

    @property
    def key(self) -> str:
        return stage_key(self.stage, self.keyed_config, self.inputs, versions=keyed_versions())

    def status(self) -> tuple[str, str]:
        """``(state, why)``: state is ``current``, ``new`` or ``stale``; why says what changed."""
        existing = read_manifest(self.out_dir)
        if existing is None:
            return "new", "no finished artefact"
        if existing.key == self.key:
            bad = verify_outputs(self.out_dir, existing)
            return ("stale", f"files changed: {', '.join(bad[:3])}") if bad else ("current", "up to date")
        config = self.keyed_config
        if existing.config != config:
            changed = sorted(k for k in set(existing.config) | set(config) if existing.config.get(k) != config.get(k))
            return "stale", f"config changed: {', '.join(changed) or 'format'}"
        changed = sorted(k for k in set(existing.inputs) | set(self.inputs) if existing.inputs.get(k) != self.inputs.get(k))
        if not changed and existing.format_version != FORMAT_VERSION:
            return "stale", f"written by artefact format version {existing.format_version}, now {FORMAT_VERSION}"
        if not changed:
            versions = keyed_versions()
            moved = sorted(k for k in versions if str(existing.versions.get(k, "")).split(".")[0] != versions[k])
            return "stale", f"library major version changed: {', '.join(moved) or 'format'}"
        return "stale", f"input changed: {', '.join(changed)}"

    def run(self, *, force: bool = False) -> StageResult:
        """Do the work unless ``out_dir`` already holds it; swap the result in atomically, manifest last.

        One writer at a time: a lock beside ``out_dir`` is held while the work runs, and a second process asked
        to write the same artefact is refused with the holder's host and pid (it is released when the holder
        exits, however it exits)."""
        with artefact_lock(self.out_dir):
            return self._run_locked(force)

    def _run_locked(self, force: bool) -> StageResult:
        if self.out_dir.exists() or self.out_dir.is_symlink():
            if not self.out_dir.is_dir() or self.out_dir.is_symlink():
                raise ManifestError(f"{self.out_dir}: exists and is not an artefact folder (a file or a link); "
                                    f"refusing to replace it: move it away or choose another output folder")
        existing = read_manifest(self.out_dir)
        if existing is None and self.out_dir.is_dir() and any(self.out_dir.iterdir()):
            raise ManifestError(f"{self.out_dir}: exists, is not empty and holds no retrdistill manifest; refusing to overwrite it")
        if existing is not None and existing.kind != self.kind:
            raise ManifestError(f"{self.out_dir}: holds a {existing.kind!r} artefact; refusing to overwrite it with {self.kind!r}")
        key = self.key
        if not force and existing is not None and existing.key == key and not verify_outputs(self.out_dir, existing):
            log.info("%s: up to date in %s, skipped", self.stage, self.out_dir)
            return StageResult(self.stage, self.out_dir, existing, skipped=True)
        if existing is not None:
            log.info("%s: %s is stale (%s); rebuilding", self.stage, self.out_dir, self.status()[1])
        if distributed_rank() > 0:
            return self._run_on_other_rank(key)
        started = time.perf_counter()
        with atomic_dir(self.out_dir) as tmp, PeakMemory() as memory:
            counts = self.body(tmp)
            manifest = Manifest(stage=self.stage, kind=self.kind, step=self.step, key=key, config=self.keyed_config,
                                inputs=self.inputs, counts=counts, versions=library_versions(*VERSIONED),
                                settings=_jsonable(self.settings) if self.settings is not None else {},
                                seconds=round(time.perf_counter() - started, 3), memory=memory.report())
            write_manifest(tmp, manifest)
        log.info("%s: done in %.1fs (peak RSS %s MB) -> %s", self.stage, manifest.seconds,
                 manifest.memory.get("peak_rss_mb"), self.out_dir)
        return StageResult(self.stage, self.out_dir, manifest, skipped=False)


    def _run_on_other_rank(self, key: str) -> StageResult:
        """A rank above 0 of a torchrun job: a distributed body runs here too, its files thrown away (rank 0 swaps
        the one folder in and writes the one manifest); any other stage waits for rank 0 to write the artefact."""
        import tempfile

        rank = distributed_rank()
        if not self.distributed:
            log.info("%s: rank %d waits for rank 0 to write %s", self.stage, rank, self.out_dir)
            while True:
                manifest = read_manifest(self.out_dir)
                if manifest is not None and manifest.key == key:
                    return StageResult(self.stage, self.out_dir, manifest, skipped=True)
                time.sleep(1.0)
        with tempfile.TemporaryDirectory(prefix=f"retrdistill-{self.stage}-rank{rank}-") as tmp:
            counts = self.body(Path(tmp))
        manifest = Manifest(stage=self.stage, kind=self.kind, step=self.step, key=key, config=self.keyed_config,
                            inputs=self.inputs, counts=counts)
        return StageResult(self.stage, self.out_dir, manifest, skipped=False)


def distributed_rank() -> int:
    """This process's rank in a torchrun job (``RANK``), 0 outside one."""
    import os

    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))


def execute(stage: str, kind: str, out_dir: str | Path, config: dict[str, Any], inputs: dict[str, str],
            body: Callable[[Path], dict[str, Any]], *, force: bool = False) -> StageResult:
    """``Work(...).run()`` in one call, for parts that write an artefact outside a pipeline step."""
    return Work(stage, kind, Path(out_dir), config, inputs, body).run(force=force)


def keyed_part_config(config: dict[str, Any], *option_fields: str) -> dict[str, Any]:
    """``config`` without the raw part options in ``option_fields``: the part's fingerprint, which the stage puts
    in its inputs, keys what of them changes output (models by content, output-neutral options such as
    ``batch_size`` left out). The options as given are still recorded, in the manifest's ``settings``."""
    return {k: v for k, v in config.items() if k not in option_fields}


# ------------------------------------------------------------------ stages as pipeline steps
@dataclass(frozen=True)
class StepInput:
    """A step key that references another step's artefact (``@id`` or ``@id.part``)."""

    kinds: tuple[str, ...]  # accepted artefact kinds
    help: str
    literal: bool = False  # a plain value (a path, a model name) is accepted instead of a reference
    many: bool = False  # a non-empty list of distinct references (``["@a", "@b"]``); prepare gets a list of paths


@dataclass(frozen=True)
class StepContext:
    """Where a step runs: its collection, the shared cache and its own output folder."""

    collection: Path
    cache_dir: Path
    out_dir: Path


@dataclass(frozen=True)
class StageSpec:
    """A stage as the pipeline sees it (registered under kind ``stage``): its config dataclass, the references
    it takes, the artefact kind it writes, and how to prepare its work from resolved inputs."""

    name: str
    config: type
    output: str  # artefact kind (retrdistill.kinds)
    inputs: dict[str, StepInput]
    prepare: Callable[[Any, dict[str, str], StepContext], Any]  # (config, input paths, context) -> Work-like
    summary: str = ""
