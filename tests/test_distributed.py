"""Distributed training and resume: the train step under ``torchrun --nproc_per_node 2`` (gloo on CPU) through
sentence-transformers' trainer gives the loss curve and weights of one process with the same global batch, and
writes one folder and one manifest; a train step killed after a checkpoint resumes from it and ends with the
weights of an uninterrupted run.

Real parts: BM25 mining and a bi-encoder teacher on the small real collection, a tiny offline BERT student with
dropout off (so two runs can be compared number for number), the real CLI under the real ``torchrun``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from killing import run_until_marker_then_kill

from retrdistill.artefacts import read_manifest

ROOT = Path(__file__).resolve().parents[1]
STUDENT = {"model": "offline:tiny-bert-mlm", "max_seq_length": 48,
           "config_overrides": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}
TEACHER = {"model": "offline:tiny-bert-mlm", "encode_corpus": False, "max_seq_length": 48, "batch_size": 32}
TRAIN = dict(student="pruned", options=STUDENT, negatives_per_query=2, max_steps=20, batch_size=8,
             learning_rate=5e-4, warmup_ratio=0.0, seed=5)
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def scored(small_collection, tmp_path_factory):
    from retrdistill.stages.mine import MineConfig, run_mine
    from retrdistill.stages.queries import QueriesConfig, run_queries
    from retrdistill.stages.score import ScoreConfig, run_score

    work = tmp_path_factory.mktemp("distributed-upstream")
    cache = work / "cache"
    run_queries(QueriesConfig(options={"num_queries": 160}), small_collection, work / "queries", cache_dir=cache)
    run_mine(MineConfig(negatives=2, depth=20, rank_max=20, sampling="top"), small_collection, work / "queries",
             work / "candidates", cache_dir=cache)
    run_score(ScoreConfig(options=TEACHER), small_collection, work / "candidates", work / "scores", cache_dir=cache)
    return work


@pytest.fixture(scope="module")
def one_process(small_collection, scored, tmp_path_factory):
    from retrdistill.stages.train import TrainConfig, run_train

    out = tmp_path_factory.mktemp("one-process") / "student"
    return run_train(TrainConfig(**TRAIN), scored / "scores", small_collection, out, cache_dir=scored / "cache")


def _cli_args(small_collection, scored, out: Path, **extra) -> list[str]:
    args = ["train", "--collection", str(small_collection), "--scores", str(scored / "scores"), "--out", str(out),
            "--cache-dir", str(scored / "cache"), "--quiet", "--student", TRAIN["student"],
            "--negatives-per-query", str(TRAIN["negatives_per_query"]), "--max-steps", str(TRAIN["max_steps"]),
            "--batch-size", str(TRAIN["batch_size"]), "--learning-rate", str(TRAIN["learning_rate"]),
            "--warmup-ratio", "0.0", "--seed", str(TRAIN["seed"])]
    for key, value in STUDENT.items():
        args += ["-o", f"{key}={json.dumps(value)}"]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(next(folder.rglob("model.safetensors"))))


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float(np.max(np.abs(wa[k] - wb[k]))) for k in wa)
    assert worst <= atol, f"largest weight difference {worst:.2e} > {atol:.0e}"


@pytest.mark.slow  # torchrun starts two processes that each import torch and train: ~1-2 min on 2 shared cores
def test_two_process_torchrun_matches_one_process_with_the_same_global_batch(small_collection, scored, one_process,
                                                                             tmp_path):
    out = tmp_path / "student"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "retrdistill.cli.app", *_cli_args(small_collection, scored, out)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    manifest = read_manifest(out)
    counts, single = manifest.counts, one_process.manifest.counts
    assert counts["processes"] == 2 and "processes" not in single
    assert counts["steps"] == single["steps"] == 20
    # the same global batch (4 per process): the logged loss is the mean over both processes' halves
    ours, theirs = np.array(counts["loss_curve"]), np.array(single["loss_curve"])
    assert ours.shape == theirs.shape and ours.shape[0] >= 2
    np.testing.assert_array_equal(ours[:, 0], theirs[:, 0])
    np.testing.assert_allclose(ours[:, 1], theirs[:, 1], rtol=1e-3)
    _assert_same_weights(out, one_process.out_dir, atol=5e-4)  # Adam: 20 steps of lr 5e-4 move a weight up to 1e-2
    # one artefact: the key of the one-process run, one folder, no temporaries or checkpoints left by any rank
    assert manifest.key == one_process.manifest.key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]


@pytest.mark.slow  # a child trains and is killed after its second checkpoint; the rerun resumes: ~1 min
def test_a_killed_train_step_resumes_from_its_last_checkpoint_with_the_weights_of_an_uninterrupted_run(
        small_collection, scored, one_process, tmp_path):
    from retrdistill.stages.train import TrainConfig, prepare_train, run_train

    out = tmp_path / "student"
    cfg = TrainConfig(**TRAIN, checkpoint_steps=5)
    key = prepare_train(cfg, scored / "scores", small_collection, out, cache_dir=scored / "cache").key
    assert key == one_process.manifest.key  # checkpointing does not key the artefact
    checkpoints = tmp_path / ".student.checkpoints" / key[:16]
    script = ("import sys; from retrdistill.cli.app import app; "
              f"app({_cli_args(small_collection, scored, out, checkpoint_steps=5)!r})")
    run_until_marker_then_kill(script, checkpoints / "checkpoint-10" / "trainer_state.json")
    assert read_manifest(out) is None and not out.exists()
    resumed = run_train(cfg, scored / "scores", small_collection, out, cache_dir=scored / "cache")
    assert resumed.manifest.counts["resumed_from_step"] >= 10
    assert resumed.manifest.counts["steps"] == 20
    # data order and RNG states are restored from the checkpoint, so the weights are those of one uninterrupted run
    _assert_same_weights(out, one_process.out_dir, atol=1e-5)
    assert not checkpoints.parent.exists()  # removed once the artefact is written



def _flops_on_rank(rank: int, world: int, port: int, inputs, weight, out: str) -> None:
    import torch
    import torch.distributed as dist

    from retrdistill.training.distributed import flops

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        w = torch.tensor(weight, requires_grad=True)  # the model's parameter, the same on every rank
        rows = torch.relu(torch.tensor(inputs[rank::world]) @ w)  # this rank's part of the global batch
        value = flops(rows)
        value.backward()
        grad = w.grad.clone()
        dist.all_reduce(grad)  # what DDP does to parameter gradients: the mean over the ranks
        torch.save({"value": float(value), "grad": grad / world}, f"{out}.{rank}")
        dist.barrier()  # neither rank tears gloo down while the other still uses it (an abort on a busy machine)
    finally:
        dist.destroy_process_group()


def _library_flops(embeddings):
    from sentence_transformers.sparse_encoder.losses import FlopsLoss

    return FlopsLoss(model=None).compute_loss_from_embeddings(embeddings)  # threshold off; the model is unused here


def test_the_splade_flops_term_and_its_gradient_do_not_change_with_the_number_of_processes(tmp_path):
    """Two gloo processes, each holding half the batch, get sentence-transformers' one-process FLOPS term of the
    whole batch and, after DDP's averaging, its parameter gradient; FlopsLoss on each half alone does not."""
    import torch
    import torch.multiprocessing as mp

    rng = np.random.default_rng(3)
    inputs = rng.normal(0.0, 1.0, (8, 6)).astype(np.float32).tolist()
    weight = rng.normal(0.1, 0.5, (6, 30)).astype(np.float32).tolist()
    w_full = torch.tensor(weight, requires_grad=True)
    expected = _library_flops(torch.relu(torch.tensor(inputs) @ w_full))  # one process, the whole batch
    expected.backward()
    with socket.socket() as probe:  # a free loopback port for the two ranks' rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_flops_on_rank, args=(2, port, inputs, weight, str(tmp_path / "out")), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"out.{rank}")
        assert abs(got["value"] - float(expected)) <= 1e-6 * float(expected)
        torch.testing.assert_close(got["grad"], w_full.grad, rtol=1e-5, atol=1e-7)
    per_rank = [_library_flops(torch.relu(torch.tensor(inputs[r::2]) @ torch.tensor(weight))) for r in range(2)]
    assert float(sum(per_rank) / 2) > float(expected) * 1.01  # FlopsLoss per process (the bug): a larger term
