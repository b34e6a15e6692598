"""What every stage shares: skip-if-current, atomic output folder, manifest written last."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrdistill.artefacts import (
    Manifest,
    atomic_dir,
    fingerprint_path,
    library_versions,
    read_manifest,
    stage_key,
    verify_outputs,
    write_manifest,
)
from retrdistill.errors import ManifestError

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


def config_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


def upstream(folder: str | Path, stage: str) -> Manifest:
    """The manifest of a finished upstream artefact, or a clear error saying which stage to run."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise ManifestError(f"{folder}: no finished {stage!r} artefact here (no manifest.json); run `retrdistill {stage}` first")
    if manifest.stage != stage:
        raise ManifestError(f"{folder}: holds a {manifest.stage!r} artefact, expected {stage!r}")
    bad = verify_outputs(folder, manifest)
    if bad:
        raise ManifestError(f"{folder}: files changed since the manifest was written: {', '.join(bad[:5])}; rerun the {stage!r} stage")
    return manifest


def file_input(path: str | Path) -> str:
    return fingerprint_path(path)


def execute(
    stage: str,
    out_dir: str | Path,
    config: dict[str, Any],
    inputs: dict[str, str],
    body: Callable[[Path], dict[str, Any]],
    *,
    force: bool = False,
) -> StageResult:
    """Run ``body(tmp_dir) -> counts`` unless ``out_dir`` already holds this exact work; swap the result in atomically."""
    out_dir = Path(out_dir)
    key = stage_key(stage, config, inputs)
    existing = read_manifest(out_dir)
    if existing is None and out_dir.is_dir() and any(out_dir.iterdir()):
        raise ManifestError(f"{out_dir}: exists, is not empty and holds no retrdistill manifest; refusing to overwrite it")
    if existing is not None and existing.stage != stage:
        raise ManifestError(f"{out_dir}: holds a {existing.stage!r} artefact; refusing to overwrite it with {stage!r}")
    if not force and existing is not None and existing.key == key and not verify_outputs(out_dir, existing):
        log.info("%s: up to date in %s, skipped", stage, out_dir)
        return StageResult(stage, out_dir, existing, skipped=True)
    if existing is not None:
        log.info("%s: %s is stale (config, inputs or files changed); rebuilding", stage, out_dir)
    started = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        counts = body(tmp)
        manifest = Manifest(stage=stage, key=key, config=config, inputs=inputs, counts=counts,
                            versions=library_versions(*VERSIONED), seconds=round(time.perf_counter() - started, 3))
        write_manifest(tmp, manifest)
    log.info("%s: done in %.1fs -> %s", stage, manifest.seconds, out_dir)
    return StageResult(stage, out_dir, manifest, skipped=False)
