"""Model references: a path that does not exist is a clear error, a hub id passes through to the hub loader."""

from __future__ import annotations

import pytest

from retrdistill.errors import ConfigError
from retrdistill.models import resolve_model


@pytest.mark.parametrize("ref", ["runs/rerank-chain-sample/ce/model", "./model", "/no/such/model", "~/no-such-model"])
def test_a_missing_local_model_is_a_config_error_naming_it(ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no such folder") as err:
        resolve_model(ref)
    assert ref in str(err.value)


@pytest.mark.parametrize("ref", ["sentence-transformers/all-MiniLM-L6-v2", "bert-base-uncased"])
def test_a_hub_id_is_returned_for_the_hub_loader(ref):
    assert resolve_model(ref) == ref


def test_an_existing_folder_resolves_to_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("m") == str((tmp_path / "m").resolve())
    assert resolve_model("./m") == str((tmp_path / "m").resolve())
