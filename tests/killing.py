"""Kill a real child process at a chosen point, for the kill-and-resume tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_until_marker_then_kill(script: str, marker: Path, timeout: float = 300.0) -> None:
    """Start ``script`` in a child Python, wait for it to write ``marker``, then SIGKILL it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"the child ended (rc {proc.returncode}) before the kill point:\n{err.decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the child did not reach the kill point in time")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
