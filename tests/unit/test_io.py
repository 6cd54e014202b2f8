"""Atomic writes, groups of outputs with their records, and permissions (testtime.io).

Checks that a group of outputs is renamed together or not at all (an exception while writing
leaves every earlier file as it was, with no temporaries left), that a record (`run.json`) is
never left beside an output it does not describe, that artifacts honour the umask like a plain
`open()`/`mkdir` (mkstemp/mkdtemp alone give 0600/0700), and that write errors name the output.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testtime import io


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*.tmp"))


@pytest.fixture
def umask():
    """Set a umask for the test (restored afterwards)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> int:
        os.umask(mask)
        return mask

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_artifacts_honour_the_umask(tmp_path, umask, mask):
    umask(mask)
    io.write_text(tmp_path / "a.txt", "x")
    io.write_json(tmp_path / "a.json", {"a": 1})
    io.save_npy(tmp_path / "a.npy", np.arange(3))
    io.write_parquet(tmp_path / "a.parquet", pd.DataFrame({"a": [1]}))
    with io.atomic_path(tmp_path / "model", is_dir=True) as tmp:
        (tmp / "weights.bin").write_bytes(b"w")
        (tmp / "sub").mkdir()
        (tmp / "private.bin").write_bytes(b"p")
        (tmp / "private.bin").chmod(0o600)  # as safetensors writes its files
    # the reference: what a plain open() and mkdir() create under the same umask
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "plain").mkdir()
    file_mode, dir_mode = _mode(tmp_path / "plain.txt"), _mode(tmp_path / "plain")
    assert file_mode == 0o666 & ~mask and dir_mode == 0o777 & ~mask
    for name in ("a.txt", "a.json", "a.npy", "a.parquet", "model/weights.bin", "model/private.bin"):
        assert _mode(tmp_path / name) == file_mode, name
    for name in ("model", "model/sub"):
        assert _mode(tmp_path / name) == dir_mode, name


def test_group_is_all_or_nothing(tmp_path):
    io.write_text(tmp_path / "a.csv", "old a")
    io.write_text(tmp_path / "a.csv.run.json", "old record")
    with pytest.raises(RuntimeError, match="boom"), io.AtomicGroup() as group:
        group.write_text(tmp_path / "a.csv", "new a")
        group.write_text(tmp_path / "b.csv", "new b")
        group.write_run_json(tmp_path / "a.csv", {"seed": 1})
        raise RuntimeError("boom")
    assert (tmp_path / "a.csv").read_text() == "old a"
    assert (tmp_path / "a.csv.run.json").read_text() == "old record"
    assert not (tmp_path / "b.csv").exists()
    assert _leftovers(tmp_path) == []


def test_unserialisable_record_leaves_the_previous_pair(tmp_path):
    """The `testtime index` case: the output must not be replaced when its record fails."""
    io.write_text(tmp_path / "m.faiss", "old index")
    io.write_text(tmp_path / "m.faiss.run.json", "old record")
    with pytest.raises(ValueError), io.AtomicGroup() as group:
        group.write_text(tmp_path / "m.faiss", "new index")
        group.write_run_json(tmp_path / "m.faiss", {"lam": float("nan")})  # JSON has no NaN
    assert (tmp_path / "m.faiss").read_text() == "old index"
    assert (tmp_path / "m.faiss.run.json").read_text() == "old record"
    assert _leftovers(tmp_path) == []


def test_kill_between_renames_never_pairs_a_new_output_with_an_old_record(tmp_path, monkeypatch):
    io.write_text(tmp_path / "d.parquet", "old")
    io.write_text(tmp_path / "d.parquet.run.json", "old record")
    real_replace = os.replace
    calls = []

    def replace_then_die(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the process dies after renaming the output, before the record
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt), io.AtomicGroup() as group:
        group.write_run_json(tmp_path / "d.parquet", {"seed": 1})  # staged first, renamed last
        group.write_text(tmp_path / "d.parquet", "new")
    assert [Path(c).name for c in calls] == ["d.parquet", "d.parquet.run.json"]
    assert (tmp_path / "d.parquet").read_text() == "new"
    assert not (tmp_path / "d.parquet.run.json").exists()  # no record rather than a wrong one


def test_output_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(ValueError, match="out.csv' is a directory"):
        io.write_text(tmp_path / "out.csv", "x")
    (tmp_path / "model").write_text("a file")
    with pytest.raises(ValueError, match="model' is a file"):
        with io.atomic_path(tmp_path / "model", is_dir=True):
            pass
    assert _leftovers(tmp_path) == []


def test_failed_write_names_the_output(tmp_path):
    io.write_text(tmp_path / "a.csv", "old")
    with pytest.raises(OSError) as info, io.AtomicGroup() as group:
        group.write_text(tmp_path / "b.csv", "b")
        group.path(tmp_path / "a.csv")
        raise OSError(errno.ENOSPC, "No space left on device")  # as a failed write() gives
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(tmp_path / "a.csv")
    assert (tmp_path / "a.csv").read_text() == "old" and not (tmp_path / "b.csv").exists()


def test_unwritable_directory_names_the_output(tmp_path, monkeypatch):
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError) as info:
        io.write_text(tmp_path / "a.csv", "x")
    assert info.value.filename == str(tmp_path / "a.csv")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_is_a_one_line_error(tmp_path, capsys):
    from testtime.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("select: {methods: [sift]}\n")
    shard = tmp_path / "s.parquet"
    pd.DataFrame(
        {"prompt_id": [0], "domain": ["A"], "method": ["base"], "steps": [0], "nll": [1.0],
         "n_bytes": [4], "bpb": [0.36], "status": ["ok"]}
    ).to_parquet(shard)  # fmt: skip
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    io.write_text(out_dir / "pp.parquet", "old")
    out_dir.chmod(0o555)
    try:
        argv = ["aggregate", "--config", str(cfg), "--inputs", str(shard), "--allow-partial"]
        assert main([*argv, "--out", str(out_dir / "pp.parquet")]) == 2
    finally:
        out_dir.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Permission denied" in err and "pp.parquet" in err
    assert (out_dir / "pp.parquet").read_text() == "old"
