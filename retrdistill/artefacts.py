"""Artefacts on disk: atomic writes, content fingerprints and the manifest each stage writes last.

A stage's output is a folder. Its ``manifest.json`` is written after every other file, atomically, so a folder
without one is unfinished and a folder with one can be trusted. The manifest records the stage, its config,
the fingerprints of its inputs, library versions, counts and the fingerprints of the files it wrote.
A stage may be skipped when its manifest's ``key`` (stage + config + input fingerprints + format) is the one
the current run would produce.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retrdistill.errors import ManifestError

FORMAT = "retrdistill-artefact"
# 3: keys built from part fingerprints (output-neutral options left out), paths relative to the workdir or the
# project folder, the corpus in the train key, and the major versions of the model libraries (``KEYED_LIBRARIES``)
FORMAT_VERSION = 3
# kinds of the artefacts format version 1 wrote, which did not record their kind
_V1_KINDS = {"queries": "queries", "mine": "candidates", "score": "scores", "train": "student", "index": "index",
             "eval": "eval", "leaderboard": "eval", "student": "student"}
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


# ---------------------------------------------------------------- atomic writes
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def host_tag() -> str:
    """This machine's name as it appears in temporary names: letters, digits, '_' and '-' only (no dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "localhost"


def _temp_owner() -> str:
    """What a temporary's name says about who made it: ``@HOST.PID`` (a random token follows it)."""
    return f"@{host_tag()}.{os.getpid()}"


# .NAME.@HOST.PID-TOKEN.tmp and .NAME.old-@HOST.PID-TOKEN; before hosts were recorded: .NAME.PID-XXXX.tmp, .NAME.old-PID
_TEMP = re.compile(r"@(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)-[^/]*\.tmp|old-@(?P<ohost>[A-Za-z0-9_-]+)\.(?P<opid>\d+)-[^/]*"
                   r"|(?P<lpid>\d+)-[^/]*\.tmp|old-(?P<lopid>\d+)")


def remove_stale_temps(path: str | Path) -> int:
    """Remove ``path``'s temporary siblings left by a killed process; returns how many were removed.

    Temporaries are named ``.NAME.@HOST.PID-TOKEN.tmp`` (and ``.NAME.old-@HOST.PID-TOKEN`` while a folder is
    swapped). One made on this host whose process no longer runs is known to be abandoned; those of live
    processes (a concurrent run) and every one made on another host (whose processes cannot be seen from here,
    e.g. on a shared filesystem) are left alone. Names from before hosts were recorded (``.NAME.PID-XXXX.tmp``)
    are judged as this host's.
    """
    path = Path(path)
    prefix = f".{path.name}."
    here = host_tag()
    removed = 0
    for entry in path.parent.glob(glob.escape(prefix) + "*"):
        m = _TEMP.fullmatch(entry.name[len(prefix):])
        if not m:
            continue
        host = m.group("host") or m.group("ohost") or here
        pid = int(m.group("pid") or m.group("opid") or m.group("lpid") or m.group("lopid"))
        if host != here or pid == os.getpid() or _pid_alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it is fsynced and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{_temp_owner()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; artefacts get the usual mode
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name and swap it into place when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_temp_owner()}-", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; an artefact folder gets the user's usual mode
    try:
        yield tmp
        if path.exists():
            trash = path.with_name(f".{path.name}.old-{_temp_owner()}-{secrets.token_hex(4)}")
            os.replace(path, trash)
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class LockedError(ManifestError):
    """Another process holds the lock of an artefact (or of a pipeline's workdir)."""


@contextlib.contextmanager
def artefact_lock(path: str | Path, *, what: str = "artefact") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a sibling file ``.NAME.lock``) or raise :class:`LockedError` naming
    the holder (host, pid, since when). The operating system releases it when the holder exits, however it
    exits, so a killed run never leaves it held. Ranks above 0 of a torchrun job do not lock (rank 0 writes)."""
    import fcntl

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) > 0:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask() | 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise LockedError(f"{path}: this {what} is being written by {holder}; wait for it to finish "
                              f"(the lock is {lock_path}, released when that process exits)") from None
        try:  # the holder before us removes the file on release: lock the file that is there now
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())}".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)  # while still held, so no one can lock the file being removed
        os.close(fd)  # releases the lock


# ---------------------------------------------------------------- fingerprints
def fingerprint_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint_obj(obj: Any) -> str:
    """Fingerprint of a JSON-able value (canonical: sorted keys, no whitespace)."""
    return fingerprint_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode())


_file_fp_cache: dict[tuple[str, int, int], str] = {}


def fingerprint_file(path: str | Path) -> str:
    """sha256 of a file's content, streamed; memoised on (path, size, mtime) within a process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _file_fp_cache:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        _file_fp_cache[key] = h.hexdigest()
    return _file_fp_cache[key]


def fingerprint_path(path: str | Path, *, exclude: tuple[str, ...] = (MANIFEST,)) -> str:
    """Fingerprint of a file, or of a folder as the sorted (relative path, content hash) list of its files."""
    path = Path(path)
    if path.is_file():
        return fingerprint_file(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    rows = []
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel in exclude or any(part.startswith(".") for part in f.relative_to(path).parts):
            continue
        rows.append((rel, fingerprint_file(f)))
    return fingerprint_obj(rows)


# ---------------------------------------------------------------- manifests
@dataclass
class Manifest:
    stage: str
    key: str  # what the run was asked to do: stage + config + input fingerprints
    config: dict[str, Any]
    inputs: dict[str, str]  # input name -> fingerprint
    outputs: dict[str, str] = field(default_factory=dict)  # relative file -> fingerprint
    counts: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    memory: dict[str, Any] = field(default_factory=dict)  # peak_rss_mb, peak_anon_mb (retrdistill.memory)
    kind: str = ""  # the artefact kind (retrdistill.kinds)
    step: str = ""  # the pipeline step id that wrote it, when a pipeline did
    settings: dict[str, Any] = field(default_factory=dict)  # the config as given, output-neutral options too (not keyed)
    created: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def fingerprint(self) -> str:
        """What downstream stages record as this artefact's fingerprint: its key and its files."""
        return fingerprint_obj({"key": self.key, "outputs": self.outputs})


# Libraries whose major version changes what a model computes (weights as saved, scores, embeddings): a stage that
# runs models keys its artefact on their major versions, so an upgrade across a major version rebuilds it. Minor
# and patch versions, and every other library, are recorded in the manifest but not keyed.
KEYED_LIBRARIES = ("sentence-transformers", "transformers")


def keyed_versions() -> dict[str, str]:
    """``{library: major version}`` of :data:`KEYED_LIBRARIES` as installed ("absent" where one is not)."""
    from importlib import metadata

    out = {}
    for name in KEYED_LIBRARIES:
        try:
            out[name] = metadata.version(name).split(".")[0]
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def stage_key(stage: str, config: dict[str, Any], inputs: dict[str, str], *, versions: dict[str, str] | None = None) -> str:
    """The key of an artefact: stage, config (as keyed), input fingerprints, the artefact format version and,
    for a stage that runs models, the major versions of :data:`KEYED_LIBRARIES`."""
    what = {"stage": stage, "config": config, "inputs": inputs, "format_version": FORMAT_VERSION}
    if versions:
        what["versions"] = versions
    return fingerprint_obj(what)


def portable(value: Any, places: list[tuple[Path, str]]) -> Any:
    """``value`` with every absolute path string under one of ``places`` (folder, label) written relative to it
    (``label + relative path``), so a key does not change when the project folder is copied or moved. Content is
    keyed separately (input fingerprints); other strings are unchanged."""
    if isinstance(value, dict):
        return {k: portable(v, places) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v, places) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value)
        for folder, label in places:
            try:
                rel = path.relative_to(folder)
            except ValueError:
                continue
            return label + rel.as_posix()
    return value


def library_versions(*names: str) -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "retrdistill": _own_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _own_version() -> str:
    from retrdistill import __version__

    return __version__


def write_manifest(folder: str | Path, manifest: Manifest, *, hash_outputs: bool = True) -> Manifest:
    """Fingerprint the folder's files into the manifest and write it last, atomically."""
    folder = Path(folder)
    if hash_outputs:
        manifest.outputs = {
            f.relative_to(folder).as_posix(): fingerprint_file(f)
            for f in sorted(folder.rglob("*"))
            if f.is_file() and f.name != MANIFEST and not any(p.startswith(".") for p in f.relative_to(folder).parts)
        }
    manifest.created = manifest.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json_atomic(folder / MANIFEST, asdict(manifest))
    return manifest


def read_manifest(folder: str | Path) -> Manifest | None:
    """The folder's manifest, or None if there is none (an unfinished or absent artefact).

    A manifest of another format, or of a newer format version than this code writes, is refused.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not a readable JSON manifest ({exc}); delete the folder to rebuild it") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ManifestError(
            f"{path}: not a retrdistill manifest (format {raw.get('format') if isinstance(raw, dict) else None!r}, "
            f"expected {FORMAT!r}); refusing to overwrite or reuse a foreign folder"
        )
    version = raw.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ManifestError(
            f"{path}: written by a newer retrdistill (format version {version}, this one reads up to "
            f"{FORMAT_VERSION}); upgrade retrdistill or rebuild the artefact"
        )
    known = {f for f in Manifest.__dataclass_fields__}
    manifest = Manifest(**{k: v for k, v in raw.items() if k in known})
    if not manifest.kind:
        manifest.kind = _V1_KINDS.get(manifest.stage, manifest.stage)
    return manifest


def verify_outputs(folder: str | Path, manifest: Manifest) -> list[str]:
    """Files listed in the manifest that are missing or changed since it was written."""
    folder = Path(folder)
    bad = []
    for rel, fp in manifest.outputs.items():
        f = folder / rel
        if not f.is_file() or fingerprint_file(f) != fp:
            bad.append(rel)
    return bad


def upstream(folder: str | Path, kind: str | tuple[str, ...]) -> Manifest:
    """The manifest of a finished artefact of ``kind`` (one kind or several accepted), or a clear error."""
    folder = Path(folder)
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    manifest = read_manifest(folder)
    if manifest is None:
        raise ManifestError(f"{folder}: no finished {' or '.join(kinds)} artefact here (no manifest.json); "
                            f"run the step that writes it first")
    if manifest.kind not in kinds:
        raise ManifestError(f"{folder}: holds a {manifest.kind!r} artefact, expected {' or '.join(map(repr, kinds))}")
    bad = verify_outputs(folder, manifest)
    if bad:
        raise ManifestError(f"{folder}: files changed since the manifest was written: {', '.join(bad[:5])}; "
                            f"rerun the step that wrote it")
    return manifest
