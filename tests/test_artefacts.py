"""Atomic writes, manifests written last, stale and foreign artefacts."""

from __future__ import annotations

import json

import pytest

from retrdistill.artefacts import FORMAT_VERSION, MANIFEST, atomic_path, read_manifest
from retrdistill.errors import ManifestError
from retrdistill.stages.base import execute


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def _body(text):
    def body(tmp):
        (tmp / "data.txt").write_text(text)
        return {"rows": 1}
    return body


def test_execute_skips_current_and_rebuilds_stale(tmp_path):
    out = tmp_path / "stage"
    first = execute("mine", "candidates", out, {"a": 1}, {"in": "x"}, _body("v1"))
    assert not first.skipped and read_manifest(out).counts == {"rows": 1}
    assert execute("mine", "candidates", out, {"a": 1}, {"in": "x"}, _body("v2")).skipped
    assert (out / "data.txt").read_text() == "v1"
    assert not execute("mine", "candidates", out, {"a": 2}, {"in": "x"}, _body("v2")).skipped  # config changed
    assert not execute("mine", "candidates", out, {"a": 2}, {"in": "y"}, _body("v3")).skipped  # input changed
    (out / "data.txt").write_text("tampered")
    assert not execute("mine", "candidates", out, {"a": 2}, {"in": "y"}, _body("v4")).skipped  # file changed under the manifest
    assert (out / "data.txt").read_text() == "v4"


def test_failed_stage_keeps_previous_artefact(tmp_path):
    out = tmp_path / "stage"
    execute("mine", "candidates", out, {"a": 1}, {}, _body("good"))

    def broken(tmp):
        (tmp / "data.txt").write_text("partial")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        execute("mine", "candidates", out, {"a": 2}, {}, broken)
    assert (out / "data.txt").read_text() == "good"
    assert read_manifest(out).config == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]


def test_newer_and_foreign_manifests_are_refused(tmp_path):
    out = tmp_path / "stage"
    execute("mine", "candidates", out, {}, {}, _body("x"))
    raw = json.loads((out / MANIFEST).read_text())
    raw["format_version"] = FORMAT_VERSION + 1
    (out / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="newer retrdistill"):
        execute("mine", "candidates", out, {}, {}, _body("y"))
    (out / MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ManifestError, match="not a retrdistill manifest"):
        read_manifest(out)


def test_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    with pytest.raises(ManifestError, match="refusing to overwrite"):
        execute("mine", "candidates", out, {}, {}, _body("x"))
    assert (out / "precious.txt").read_text() == "user data"
