"""Provenance records (testtime.provenance): the config hash against a hash computed here, the
record's fields, and where a record goes beside a file or a directory output.

    .venv/bin/python -m pytest -q tests/unit/test_provenance.py
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from importlib import metadata

from testtime import provenance


def test_config_hash_is_sorted_json_sha256_and_order_free():
    cfg = {"seed": 3, "select": {"n": 5, "lam": 0.1}}
    blob = b'{"seed": 3, "select": {"lam": 0.1, "n": 5}}'  # sorted keys, json.dumps separators
    assert provenance.config_hash(cfg) == hashlib.sha256(blob).hexdigest()[:16]
    assert provenance.config_hash({"select": {"lam": 0.1, "n": 5}, "seed": 3}) == (
        provenance.config_hash(cfg)
    )


def test_record_fields():
    cfg = {"seed": 1}
    record = provenance.provenance(cfg, seed=1, device="cpu", extra={"steps": 4})
    assert record["argv"] == sys.argv and record["python"] == platform.python_version()
    assert (record["seed"], record["device"], record["steps"]) == (1, "cpu", 4)
    assert record["config"] == cfg and len(record["config_hash"]) == 16
    assert record["packages"]["numpy"] == metadata.version("numpy")
    assert set(record["packages"]) == set(provenance.PROVENANCE_PACKAGES)
    assert "config_hash" not in provenance.provenance()
    json.dumps(record, allow_nan=False)  # a record is plain JSON


def test_absent_package_is_none():
    assert provenance.package_versions(("no-such-distribution-xyz",)) == {
        "no-such-distribution-xyz": None
    }


def test_run_json_path(tmp_path):
    (tmp_path / "model").mkdir()
    assert provenance.run_json_path(tmp_path / "model") == tmp_path / "model" / "run.json"
    assert provenance.run_json_path(tmp_path / "a.parquet") == tmp_path / "a.parquet.run.json"
