"""Model locations (testtime.locations): local path or hub id, and a missing local directory is
an error naming the flag instead of a hub lookup.

    .venv/bin/python -m pytest -q tests/unit/test_locations.py
"""

from __future__ import annotations

import os

import pytest

from testtime import locations


def test_looks_local_and_require_local_dir(tmp_path):
    assert not locations.looks_local("gpt2") and not locations.looks_local("org/model")
    assert locations.looks_local("./gpt2") and locations.looks_local("/abs/x")
    assert locations.looks_local("a/b/c")
    assert locations.looks_local(tmp_path)
    with pytest.raises(FileNotFoundError, match="'/no/such' does not exist .*not looked up"):
        locations.require_local_dir("/no/such", "--tokenizer")


def test_resolve_model_location(tmp_path, monkeypatch):
    assert locations.resolve_model_location("org/model", "--model") == ("org/model", False)
    assert locations.resolve_model_location(tmp_path, "--model") == (str(tmp_path), True)
    # a bare name is a hub id unless the caller says it is local: then it must exist
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="--tokenizer 'tok' does not exist"):
        locations.resolve_model_location("tok", "--tokenizer", local=True)
    (tmp_path / "tok").mkdir()
    assert locations.resolve_model_location("tok", "--tokenizer") == ("tok", True)
    # ~ is expanded for the loader (from_pretrained does not expand it)
    monkeypatch.setenv("HOME", str(tmp_path))
    where = locations.resolve_model_location("~/tok", "--tokenizer").where
    assert where == os.path.join(str(tmp_path), "tok")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="'file' is not a directory"):
        locations.resolve_model_location("file", "--model")
