"""Evaluation: TREC runs and qrels, metrics (ranx), significance tests, fusion, dataset checks, leaderboards.

``import retrdistill.evaluation`` stays cheap: ranx (numba) and scipy load on first use.
"""

from __future__ import annotations

from retrdistill.evaluation.checks import CheckReport, check_dataset
from retrdistill.evaluation.compare import Comparison, compare_results, compare_runs, holm
from retrdistill.evaluation.fusion import fuse_runs
from retrdistill.evaluation.leaderboard import Leaderboard, Row, load_leaderboard
from retrdistill.evaluation.metrics import ACCEPTED_METRICS, DEFAULT_METRICS, EvalResult, evaluate
from retrdistill.evaluation.runs import Qrels, Run, RunFileStats, read_qrels, read_trec_run, write_trec_run

__all__ = [
    "ACCEPTED_METRICS",
    "DEFAULT_METRICS",
    "CheckReport",
    "Comparison",
    "EvalResult",
    "Leaderboard",
    "Qrels",
    "Row",
    "Run",
    "RunFileStats",
    "check_dataset",
    "compare_results",
    "compare_runs",
    "evaluate",
    "fuse_runs",
    "holm",
    "load_leaderboard",
    "read_qrels",
    "read_trec_run",
    "write_trec_run",
]
