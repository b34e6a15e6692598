"""Stage ``pick``: the best of several trained students by their recorded validation metric.

    - {id: lr-a, stage: train, scores: "@scores", learning_rate: 2.0e-5, validation: {fraction: 0.1}}
    - {id: lr-b, stage: train, scores: "@scores", learning_rate: 1.0e-4, validation: {fraction: 0.1}}
    - {id: pick, stage: pick, students: ["@lr-a", "@lr-b"]}
    - {id: index, stage: index, model: "@pick"}

Each student's value is its kept checkpoint's value of ``metric`` (default: the metric the students were
validated on, which must be the same for all), read from its manifest's ``counts.validation``; the highest
wins, the first listed on a tie. The students must have been validated on the same held-out queries (the
same held-out fingerprint), else the values do not compare and the step refuses (``same_split: false`` allows
it). The winner's ``model/`` (and ``untrained/``, if any) is copied into the pick's folder, so ``@pick`` is a
``student`` artefact like any other; ``pick.json`` and the manifest record what was compared and why.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrdistill.artefacts import Manifest, write_json_atomic, upstream
from retrdistill.errors import ConfigError
from retrdistill.stages.base import StageSpec, StepInput, Work, config_dict

log = logging.getLogger(__name__)


@dataclass
class PickConfig:
    metric: str | None = None  # a validation value every student recorded; default: their common metric
    same_split: bool = True  # refuse students validated on different held-out queries


def student_folder(path: str | Path) -> Path:
    """The artefact folder of a student reference: ``@a`` resolves to ``a/model``, whose parent holds the
    manifest."""
    path = Path(path)
    if path.name == "untrained":
        raise ConfigError(f"pick: {path} is a student's untrained start; reference the trained student (@step)")
    if not (path / "manifest.json").is_file() and (path.parent / "manifest.json").is_file():
        return path.parent
    return path


def _value(name: str, manifest: Manifest, metric: str | None) -> tuple[str, float, dict[str, Any]]:
    record = manifest.counts.get("validation")
    if not isinstance(record, dict) or not record.get("curve"):
        raise ConfigError(f"pick: {name} was trained without validation (no counts.validation in its manifest); "
                          f"give its train step validation: {{fraction: 0.1}}")
    metric = metric or record["metric"]
    best = record.get("best") or {}
    step = best.get("step", record["last_step"])
    point = next((p for p in reversed(record["curve"]) if p["step"] == step), record["curve"][-1])
    values = {k.removeprefix("eval_"): v for k, v in point["metrics"].items()}
    if metric not in values:
        raise ConfigError(f"pick: {name} recorded no {metric!r}; it recorded: {', '.join(values)}")
    return metric, float(values[metric]), record


def prepare_pick(cfg: PickConfig, students: list[str | Path], out_dir: str | Path) -> Work:
    folders = [student_folder(p) for p in students]
    manifests = {}
    for folder in folders:
        name = folder.name
        if name in manifests:
            raise ConfigError(f"pick: {folder} is listed twice")
        manifests[name] = (folder, upstream(folder, "student"))
    if len(manifests) < 2:
        raise ConfigError("pick: give at least two students to choose from")
    inputs = {f"student:{name}": m.fingerprint for name, (_, m) in manifests.items()}
    config = {**config_dict(cfg), "students": list(manifests)}

    def body(tmp: Path) -> dict[str, Any]:
        compared, metrics, splits = [], set(), set()
        for name, (folder, manifest) in manifests.items():
            metric, value, record = _value(name, manifest, cfg.metric)
            metrics.add(metric)
            split = (record.get("split") or {}).get("held_out_fingerprint")
            splits.add(split)
            compared.append({"student": name, "step": manifest.step, "folder": str(folder), "value": value,
                             "kept_step": (record.get("best") or {}).get("step"), "held_out_fingerprint": split,
                             "fingerprint": manifest.fingerprint})
        if len(metrics) > 1:
            raise ConfigError(f"pick: the students were validated on different metrics ({', '.join(sorted(metrics))}); "
                              f"set metric: to one they all recorded")
        if cfg.same_split and len(splits) > 1:
            raise ConfigError("pick: the students were validated on different held-out queries (held-out "
                              "fingerprints differ: other scores, fraction or seed), so their values do not compare; "
                              "set same_split: false to pick anyway")
        metric = metrics.pop()
        winner = max(compared, key=lambda c: c["value"])  # max keeps the first of equal values
        folder, manifest = manifests[winner["student"]]
        shutil.copytree(folder / "model", tmp / "model")
        if (folder / "untrained").is_dir():
            shutil.copytree(folder / "untrained", tmp / "untrained")
        why = (f"{winner['student']} has the highest {metric} ({winner['value']:.4f}) of "
               + ", ".join(f"{c['student']} {c['value']:.4f}" for c in compared))
        log.info("pick: %s", why)
        write_json_atomic(tmp / "pick.json", {"metric": metric, "picked": winner["student"], "why": why,
                                              "compared": compared})
        counts = {"picked": winner["student"], "metric": metric, "value": winner["value"], "why": why,
                  "compared": {c["student"]: c["value"] for c in compared},
                  "validation": manifest.counts["validation"]}
        for key in ("dim", "parameters"):
            if key in manifest.counts:
                counts[key] = manifest.counts[key]
        return counts

    return Work("pick", "student", Path(out_dir), config, inputs, body)


STAGE = StageSpec(
    name="pick", config=PickConfig, output="student",
    inputs={"students": StepInput(("student",), "the trained students to choose among (trained with validation)",
                                  many=True)},
    prepare=lambda cfg, refs, ctx: prepare_pick(cfg, refs["students"], ctx.out_dir),
    summary="the best of several students by their recorded validation metric (a copy of the winner)",
)
