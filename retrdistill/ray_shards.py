"""Ray backend (``pip install 'retrdistill[ray]'``): the shards of a score step as Ray tasks, merged by the same
checked merge step (:mod:`retrdistill.stages.merge`).

    import ray
    ray.init(address="auto")                       # or ray.init(num_cpus=8) on one machine
    result = score_on_ray(cfg, collection, candidates, "runs/scores", shards=16, cache_dir=".cache/retrdistill",
                          num_gpus=1)              # one GPU per task; Ray places the tasks on the cluster

Each task runs ``run_score`` with ``shard: I/N`` into ``out_dir.shards/I-of-N`` and its own cache file, exactly
what ``retrdistill score --shard I/N`` does on a Slurm node; the paths must be on storage every Ray node sees (a
shared filesystem). A task that fails is retried by Ray (``max_retries``); a shard already finished is skipped
by its manifest, so re-calling after a partial failure reruns only what is missing.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from retrdistill.stages.base import StageResult

log = logging.getLogger(__name__)


def shard_dirs(out_dir: str | Path, shards: int) -> list[Path]:
    """Where the shards of ``out_dir`` go: ``OUT.shards/I-of-N``."""
    out_dir = Path(out_dir)
    return [out_dir.with_name(f"{out_dir.name}.shards") / f"{i}-of-{shards}" for i in range(shards)]


def score_on_ray(cfg, collection_dir: str | Path, candidates_dir: str | Path, out_dir: str | Path, *, shards: int,
                 cache_dir: str | Path, num_cpus: float = 1, num_gpus: float = 0, max_retries: int = 2,
                 force: bool = False) -> StageResult:
    """Score ``shards`` shards of ``candidates_dir`` as Ray tasks, then merge them into ``out_dir``."""
    import ray

    from retrdistill.stages.merge import run_merge

    if not ray.is_initialized():
        ray.init()
    dirs = shard_dirs(out_dir, shards)

    @ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)
    def score_shard(index: int) -> str:
        from retrdistill.stages.score import run_score

        shard_cfg = dataclasses.replace(cfg, shard=f"{index}/{shards}")
        result = run_score(shard_cfg, collection_dir, candidates_dir, dirs[index], cache_dir=cache_dir, force=force)
        return str(result.out_dir)

    done = ray.get([score_shard.remote(i) for i in range(shards)])
    log.info("ray: %d score shards done", len(done))
    return run_merge(done, out_dir, cache_dir=cache_dir, force=force)
