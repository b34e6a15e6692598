"""Stage ``merge``: the N shard folders of one sharded step combined into the artefact the unsharded step writes.

The merge refuses to run unless every shard ``0..N-1`` is present exactly once and finished (its manifest
written, its files unchanged), and the shards share the stage, the config (but for ``shard``) and the inputs;
the error names the missing, unfinished, duplicated or foreign shard folder and what differs.

What it writes is the unsharded artefact: the same kind, the same key (stage + config without ``shard`` +
inputs), so downstream steps cannot tell the two apart, and the same bytes:

* ``scores`` (and ``candidates``, once the mine stage takes ``shard``): the shards' JSONL files concatenated in
  shard order (contiguous row ranges, :mod:`retrdistill.shards`); any other file (e.g. generated passages) must
  be identical in every shard and is copied once. A score merge also copies each shard's score cache
  (``scores.shard-I-of-N.sqlite``) into the main cache (``scores.sqlite``), so an unsharded re-run reuses every
  score.
* ``queries``: the shards' training queries combined by their source (:meth:`retrdistill.parts.QuerySource.combine`:
  concatenated in shard order; the ``llm`` source then drops duplicates across shards and runs its teacher
  filter over the whole, which needs the collection), checked against the evaluation queries, written once.
* ``eval``: each system's TREC run concatenated over the shards' query slices, then the metrics, significance
  tests and leaderboard computed over all queries (:func:`retrdistill.stages.evaluate.merge_eval_shards`).
* ``index``: a sharded index (:mod:`retrdistill.indexers.sharded`): the shard folders linked in under
  ``shards/I-of-N/``, the doc ids concatenated, one ``index.json`` listing the shards and their corpus rows;
  ``Retriever.load`` searches it as the unsharded index.

The manifest's counts add up the shards' counts and record ``shards`` (N) and each shard's fingerprint.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrdistill.artefacts import Manifest, atomic_path, upstream
from retrdistill.errors import ConfigError, DataError, ManifestError
from retrdistill.shards import SHARD_LAYOUT, Shard, parse_shard, shard_file
from retrdistill.stages.base import StageResult, StageSpec, StepInput, Work

log = logging.getLogger(__name__)

# kind -> the file its shards' rows are concatenated into; the other shardable kinds have their own rule (MERGERS)
CONCATENATED = {"scores": "scores.jsonl", "candidates": "candidates.jsonl"}


@dataclass
class MergeConfig:
    """The merge has no settings: what it does follows from the shards' manifests."""


def run_merge(shard_dirs: list[str | Path], out_dir: str | Path, *, cache_dir: str | Path | None = None,
              collection_dir: str | Path | None = None, force: bool = False) -> StageResult:
    """``collection_dir``: the shards' collection, needed to merge eval shards and ``llm`` query shards with a
    teacher filter (a pipeline's merge step passes its own)."""
    return prepare_merge(shard_dirs, out_dir, cache_dir=cache_dir, collection_dir=collection_dir).run(force=force)


@dataclass
class ShardSet:
    """The checked shards, in shard order: folders, manifests and what they share."""

    dirs: list[Path]
    manifests: list[Manifest]
    shards: list[Shard]
    stage: str
    kind: str
    config: dict[str, Any]  # the shards' config without ``shard``: the unsharded step's config
    inputs: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)  # the shards' config as given, without ``shard``


def check_shards(shard_dirs: list[str | Path]) -> ShardSet:
    """The shards in order, or a ManifestError naming the missing, unfinished, duplicated or foreign one."""
    if not shard_dirs:
        raise ConfigError("merge: no shard folders given")
    found: dict[int, tuple[Path, Manifest, Shard]] = {}
    first: tuple[Path, Manifest, Shard] | None = None
    for raw in shard_dirs:
        folder = Path(raw)
        if not folder.is_dir():
            raise ManifestError(f"{folder}: no finished shard here (the folder does not exist); run that shard first")
        manifest = upstream(folder, SHARDABLE)  # no manifest: the shard has not finished
        shard = parse_shard(manifest.config.get("shard"))
        if shard is None:
            raise ManifestError(f"{folder}: not a shard (its {manifest.stage} config has no shard: I/N); "
                                f"only the folders of a sharded step can be merged")
        if first is None:
            first = (folder, manifest, shard)
        else:
            _check_same(first, (folder, manifest, shard))
        if shard.index in found:
            raise ManifestError(f"{folder}: shard {shard.label} given twice (also {found[shard.index][0]})")
        found[shard.index] = (folder, manifest, shard)
    assert first is not None
    count = first[2].count
    missing = [i for i in range(count) if i not in found]
    if missing:
        raise ManifestError(f"merge: shard(s) {', '.join(f'{i}/{count}' for i in missing)} of {first[1].stage} "
                            f"missing or unfinished (given: {', '.join(str(found[i][0]) for i in sorted(found))}); "
                            f"run them first, every shard 0..{count - 1} is needed")
    ordered = [found[i] for i in range(count)]
    config = {k: v for k, v in first[1].config.items() if k not in ("shard", SHARD_LAYOUT)}
    settings = {k: v for k, v in first[1].settings.items() if k != "shard"}
    return ShardSet([f for f, _, _ in ordered], [m for _, m, _ in ordered], [s for _, _, s in ordered],
                    first[1].stage, first[1].kind, config, dict(first[1].inputs), settings)


def _check_same(ref: tuple[Path, Manifest, Shard], other: tuple[Path, Manifest, Shard]) -> None:
    (ref_dir, ref_m, ref_s), (folder, m, shard) = ref, other
    foreign = f"{folder}: foreign shard (not of the same sharded step as {ref_dir}):"
    if (m.stage, m.kind) != (ref_m.stage, ref_m.kind):
        raise ManifestError(f"{foreign} a {m.stage} {m.kind!r} artefact, expected {ref_m.stage} {ref_m.kind!r}")
    if shard.count != ref_s.count:
        raise ManifestError(f"{foreign} shard {shard.label} of {shard.count}, expected one of {ref_s.count}")
    strip = lambda c: {k: v for k, v in c.items() if k not in ("shard", SHARD_LAYOUT)}  # noqa: E731
    if strip(m.config) != strip(ref_m.config):
        keys = sorted(k for k in set(strip(m.config)) | set(strip(ref_m.config))
                      if m.config.get(k) != ref_m.config.get(k))
        raise ManifestError(f"{foreign} its config differs in {', '.join(keys)}")
    if m.inputs != ref_m.inputs:
        keys = sorted(k for k in set(m.inputs) | set(ref_m.inputs) if m.inputs.get(k) != ref_m.inputs.get(k))
        raise ManifestError(f"{foreign} its inputs differ in {', '.join(keys)} (another upstream artefact, "
                            f"teacher or model)")


def prepare_merge(shard_dirs: list[str | Path], out_dir: str | Path, *, cache_dir: str | Path | None = None,
                  collection_dir: str | Path | None = None) -> Work:
    shards = check_shards(shard_dirs)

    def body(tmp: Path) -> dict[str, Any]:
        counts = MERGERS[shards.kind](shards, tmp, cache_dir=cache_dir, collection_dir=collection_dir,
                                      out_dir=Path(out_dir))
        counts["shards"] = len(shards.dirs)
        counts["shard_fingerprints"] = [m.fingerprint for m in shards.manifests]
        if shards.stage == "score" and cache_dir is not None:
            main = Path(cache_dir) / "scores.sqlite"
            parts = [p for p in (shard_file(main, s) for s in shards.shards) if p.is_file()]
            if parts:
                from retrdistill.score_cache import merge_caches

                counts["cache_rows_merged"] = merge_caches(main, parts)
        log.info("merge: %d %s shards of %s -> %s", len(shards.dirs), shards.kind, shards.stage, out_dir)
        return counts

    return Work(shards.stage, shards.kind, Path(out_dir), shards.config, shards.inputs, body,
                settings=shards.settings or None)


def _merge_concatenated(shards: ShardSet, tmp: Path, **_: Any) -> dict[str, Any]:
    """Row files concatenated in shard order, counts summed."""
    _concatenate(shards, CONCATENATED[shards.kind], tmp)
    return _summed_counts(shards.manifests)


def _merge_index(shards: ShardSet, tmp: Path, *, out_dir: Path, **_: Any) -> dict[str, Any]:
    from retrdistill.indexers.sharded import merge_index_shards

    return merge_index_shards(shards.dirs, shards.manifests, tmp, out_dir)


def _merge_eval(shards: ShardSet, tmp: Path, *, cache_dir, collection_dir, **_: Any) -> dict[str, Any]:
    from retrdistill.stages.evaluate import merge_eval_shards

    return merge_eval_shards(shards, tmp, cache_dir, collection_dir)


def _merge_queries(shards: ShardSet, tmp: Path, *, cache_dir: str | Path | None,
                   collection_dir: str | Path | None, **_: Any) -> dict[str, Any]:
    """The shards' queries combined by their source, leak-checked over the whole, written as the unsharded step."""
    from retrdistill import registry
    from retrdistill.data.beir import open_collection
    from retrdistill.pseudo_queries import check_no_eval_leak
    from retrdistill.kinds import read_queries, write_queries
    from retrdistill.stages.queries import eval_queries

    if cache_dir is None:
        raise ConfigError("merge: query shards need the cache folder (cache_dir) their source ran with")
    config = shards.config
    given = shards.settings or config  # the source's options as given (the key holds its fingerprint instead)
    source = registry.build("query_generator", config["source"], given.get("options") or {}, cache_dir=Path(cache_dir))
    collection = open_collection(collection_dir, Path(cache_dir) / "corpora") if collection_dir is not None else None
    train = source.combine(collection, [read_queries(folder) for folder in shards.dirs])
    counts = _summed_counts(shards.manifests)
    if collection is not None:  # the whole set checked once; else each shard checked its own part
        counts["eval_queries_used"] = check_no_eval_leak(train, eval_queries(collection, config["eval_split"]),
                                                         config["eval_split"], allowed=config["allow_eval_queries"])
    write_queries(tmp, train)
    counts.update(source.counts())
    counts.update(queries=len(train.queries), positives=sum(len(p) for p in train.positives.values()))
    return counts


def _concatenate(shards: ShardSet, name: str, tmp: Path) -> None:
    with atomic_path(tmp / name) as part, open(part, "wb") as out:
        for folder in shards.dirs:
            with open(folder / name, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    for rel in sorted(set().union(*(m.outputs for m in shards.manifests)) - {name}):
        prints = {m.outputs.get(rel) for m in shards.manifests}
        if len(prints) != 1:
            raise DataError(shards.dirs[0] / rel, None, f"differs between the shards (or is missing from some); "
                            f"a {shards.kind} merge copies every file but {name} unchanged, so it must be identical")
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as part:
            shutil.copyfile(shards.dirs[0] / rel, part)


def _summed_counts(manifests: list[Manifest]) -> dict[str, Any]:
    """Counts every shard holds as a number, added up (ratios and nested counts are left out)."""
    out: dict[str, Any] = {}
    for key in manifests[0].counts:
        values = [m.counts.get(key) for m in manifests]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[key] = sum(values)
    return out


# kind -> how its shards become the unsharded artefact (the merge step's input kinds)
MERGERS: dict[str, Callable[..., dict[str, Any]]] = {
    "scores": _merge_concatenated, "candidates": _merge_concatenated, "index": _merge_index,
    "queries": _merge_queries, "eval": _merge_eval}
SHARDABLE = tuple(MERGERS)


def merge_spec(kind: str) -> StageSpec:
    """The merge as a pipeline step writing ``kind`` (a step with ``shards: N`` becomes N shard steps and this)."""
    return StageSpec(
        name="merge", config=MergeConfig, output=kind,
        inputs={"shards": StepInput(SHARDABLE, "the shard steps of one sharded step, every one of 0..N-1",
                                    many=True)},
        prepare=lambda cfg, refs, ctx: prepare_merge(refs["shards"], ctx.out_dir, cache_dir=ctx.cache_dir,
                                                     collection_dir=ctx.collection),
        summary="the shards of a sharded step, checked and combined into the unsharded artefact",
    )
