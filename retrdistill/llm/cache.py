"""The generation cache: every LLM generation stored once, keyed on everything that changes it, in shards.

Layout under ``cache_dir/llm-generations/``: one folder per *namespace*, the fingerprint of (client fingerprint
— model weights by content hash, or endpoint + served model name —, template digest, sampling parameters and
seed), holding ``namespace.json`` (what the namespace is, for people) and shard files ``*.jsonl``, one row
``{"input": hash, "text": ...}`` per generation, ``input`` the hash of the values filled into the template.
Each batch of generations is written as one shard, atomically, as soon as it is generated, so a killed run keeps
every finished batch and a re-run generates only what is missing. A changed template is another namespace:
what it writes is regenerated, nothing another template wrote. Lookups stream the namespace's shards and keep
only the rows asked for; once a namespace holds more than ``compact_over`` shards they are merged into one.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrdistill import progress
from retrdistill.artefacts import atomic_path, fingerprint_obj, remove_stale_temps, write_json_atomic
from retrdistill.llm.client import GenerationParams
from retrdistill.llm.templates import Template
from retrdistill.parts import LLMClient

log = logging.getLogger(__name__)
_SEQ = itertools.count()


# .NAME.@HOST.PID-TOKEN.tmp (retrdistill.artefacts.atomic_path; HOST has no dots), or .NAME.PID-TOKEN.tmp from
# before hosts were recorded
_TEMP_NAMES = (re.compile(r"\.(?P<name>.+)\.@[A-Za-z0-9_-]+\.\d+-[^./]*\.tmp"),
               re.compile(r"\.(?P<name>.+)\.\d+-[^./]*\.tmp"))


def _temp_target(temp: str) -> str | None:
    """The file a temporary's name says it was to become (None: not one of atomic_path's temporaries)."""
    for pattern in _TEMP_NAMES:
        m = pattern.fullmatch(temp)
        if m:
            return m.group("name")
    return None


def input_hash(values: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:32]


class GenerationCache:
    def __init__(self, folder: str | Path, *, compact_over: int = 256) -> None:
        self.folder = Path(folder)
        self.compact_over = compact_over

    def namespace(self, client: dict[str, Any], template: Template, params: GenerationParams) -> Path:
        """The folder of one (client, template, parameters) combination, described in its ``namespace.json``."""
        meta = {"client": client, "template": template.digest, "params": params.key()}
        folder = self.folder / fingerprint_obj(meta)[:24]
        if not (folder / "namespace.json").is_file():
            write_json_atomic(folder / "namespace.json", {**meta, "template_name": template.name,
                                                          "template_path": str(template.path)})
        return folder

    def shards(self, namespace: Path) -> list[Path]:
        return sorted(namespace.glob("*.jsonl"))

    def lookup(self, namespace: Path, wanted: set[str]) -> dict[str, str]:
        """input hash -> text for the wanted inputs already generated (and a killed run's unfinished shard
        removed)."""
        for name in {_temp_target(tmp.name) for tmp in namespace.glob(".*.tmp")} - {None}:
            remove_stale_temps(namespace / name)
        found: dict[str, str] = {}
        shards = self.shards(namespace)
        for _, row in self._rows(shards):
            if row["input"] in wanted and row["input"] not in found:
                found[row["input"]] = row["text"]
        if len(shards) > self.compact_over:
            self._compact(namespace, shards)
        return found

    def add(self, namespace: Path, rows: list[tuple[str, str]]) -> Path | None:
        """Write (input hash, text) rows as one new shard, atomically; returns its path."""
        if not rows:
            return None
        path = namespace / f"{time.time_ns():020d}-{os.getpid()}-{next(_SEQ):06d}.jsonl"
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for key, text in rows:
                fh.write(json.dumps({"input": key, "text": text}, ensure_ascii=False) + "\n")
        return path

    def _rows(self, shards: list[Path]) -> Iterator[tuple[Path, dict[str, str]]]:
        for shard in shards:
            try:
                fh = open(shard, encoding="utf-8")
            except FileNotFoundError:  # merged away by a concurrent compaction
                continue
            with fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        yield shard, {"input": str(row["input"]), "text": str(row["text"])}
                    except (json.JSONDecodeError, KeyError, TypeError):
                        log.warning("llm cache: skipped a malformed row of %s", shard)

    def _compact(self, namespace: Path, shards: list[Path]) -> None:
        merged = namespace / f"{time.time_ns():020d}-{os.getpid()}-merged.jsonl"
        with atomic_path(merged) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for _, row in self._rows(shards):
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        for shard in shards:
            with contextlib.suppress(FileNotFoundError):
                shard.unlink()
        log.info("llm cache: merged %d shards of %s", len(shards), namespace.name)


@dataclass
class Generated:
    texts: dict[str, str]  # item id -> completion
    generated: int  # new generations
    from_cache: int  # generations found in the cache


def generate_cached(client: LLMClient, template: Template, items: list[tuple[str, dict[str, str]]],
                    params: GenerationParams, cache: GenerationCache, *, desc: str = "llm") -> Generated:
    """One completion per item (``(item id, template values)``), from the cache where it holds one; the missing
    ones generated in batches of ``client.batch_size()``, each batch written to the cache as it finishes."""
    namespace = cache.namespace(client.fingerprint(), template, params)
    keys = {item: input_hash(values) for item, values in items}
    known = cache.lookup(namespace, set(keys.values()))
    todo: list[tuple[str, dict[str, str]]] = []
    queued: set[str] = set()
    for item, values in items:
        if keys[item] not in known and keys[item] not in queued:
            todo.append((item, values))
            queued.add(keys[item])
    reused = sum(1 for item, _ in items if keys[item] in known)
    if todo:
        log.info("%s: %d of %d generations to write (%d from the cache %s)", desc, len(todo), len(items), reused,
                 namespace)
    bar = progress.bar(len(todo), desc, "gen")
    size = max(1, client.batch_size())
    for start in range(0, len(todo), size):
        batch = todo[start:start + size]
        texts = client.generate([template.render(**values) for _, values in batch], params)
        rows = [(keys[item], text) for (item, _), text in zip(batch, texts)]
        cache.add(namespace, rows)
        known.update(rows)
        bar.update(len(batch))
    bar.close()
    return Generated({item: known[keys[item]] for item, _ in items}, len(todo), reused)
