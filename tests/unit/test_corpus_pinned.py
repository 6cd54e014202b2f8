"""The demo corpus's pinned directory: the installer, and independence from the environment.

* ``install`` (real pip, offline: ``--no-index`` over a folder of tiny hand-made wheels) keeps
  exactly each wheel's ``.dist-info`` and licence files (the expected file list written out by
  hand), refuses a file whose hash does not match the lock and leaves the previous directory.
* Adding a dependency to the project and installing it moves no document: the real
  ``testtime corpus`` runs in an overlay venv (the project's packages through a ``.pth``)
  before and after a new distribution is pip-installed into that venv's site-packages and made
  a requirement of its ``testtime`` (the place and the closure the demo read until it had a
  corpus directory); the fingerprint is unchanged. As a control, pinning the same
  distribution in the corpus directory does change it.

Run: ``.venv/bin/pytest tests/unit/test_corpus_pinned.py`` (about 15 s; pip runs offline).
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.unit.tiny_wheels import make_wheel, pinned_corpus, write_lock
from testtime.config import validate_config
from testtime.corpus import DemoRoots, build_corpus
from testtime.corpus.pinned import MANIFEST, install

WORDS = "north south east west up down left right in out near far".split()


def _prose(i: int, n: int = 80) -> str:
    return " ".join(f"{WORDS[(i * 5 + j) % len(WORDS)]}{i}" for j in range(n))


def _wheels(folder: Path, n: int = 6) -> list[Path]:
    return [
        make_wheel(
            folder,
            f"pkg{i}",
            f"1.{i}",
            f"# pkg{i}\n\n{_prose(i)}",
            {"@/LICENSE": f"Licence {i}. {_prose(i + 40)}", f"pkg{i}/core.py": "x = 1\n"},
        )
        for i in range(n)
    ]


@pytest.fixture
def offline_pip(monkeypatch, tmp_path):
    """pip sees only ``tmp_path/index`` (a find-links folder); returns that folder."""
    index = tmp_path / "index"
    index.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index


@pytest.mark.slow
def test_install_keeps_dist_info_and_licences_and_checks_hashes(tmp_path, offline_pip):
    wheels = _wheels(offline_pip, n=2)
    lock = write_lock(tmp_path / "corpus.txt", wheels)
    target = tmp_path / ".corpus"
    pinned = install(lock, target)
    assert [p.name for p in pinned] == ["pkg0", "pkg1"]
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    # pkg*/core.py is not kept: only what the demo reads
    info = ["site/pkg0-1.0.dist-info/", "site/pkg1-1.1.dist-info/"]
    kept = [d + n for d in info for n in ("LICENSE", "METADATA", "RECORD", "WHEEL")]
    assert files == [MANIFEST, *kept]
    manifest = json.loads((target / MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted(w.name for w in wheels)
    # a file that is not the pinned one: pip refuses it, the old directory stays as it was
    make_wheel(offline_pip, "pkg1", "1.1", "tampered")
    with pytest.raises(subprocess.CalledProcessError):
        install(lock, target)
    assert json.loads((target / MANIFEST).read_text()) == manifest


def _overlay_venv(root: Path) -> Path:
    """A venv whose site-packages reaches the project's through a ``.pth``; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = _site_packages(python)
    project = sysconfig.get_paths()["purelib"]
    (site / "project.pth").write_text(f"import site; site.addsitedir({project!r})\n")
    return python


def _site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.check_output([str(python), "-c", code], text=True).strip())


def _corpus_fingerprint(python: Path, config: Path, out: Path) -> str:
    code = "import sys; from testtime.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run(
        [str(python), "-c", code, "corpus", "--config", str(config), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    record = json.loads(out.with_name(out.name + ".run.json").read_text())
    return record["corpus"]["fingerprint"]


@pytest.mark.slow
def test_a_new_installed_dependency_moves_no_document(tmp_path):
    corpus = pinned_corpus(tmp_path, _wheels(tmp_path / "wheels"))
    config = tmp_path / "c.yaml"
    config.write_text(
        "data:\n  domains: [Pile-CC, FreeLaw]\n  docs_per_domain: 5\n  prompts_per_domain: 1\n"
        f"  demo: {{corpus_dir: {str(corpus)!r}}}\n"
    )
    python = _overlay_venv(tmp_path / "venv")
    before = _corpus_fingerprint(python, config, tmp_path / "before" / "documents.parquet")

    # the project gains a dependency and it is installed, as `make install` would do it
    extra = make_wheel(
        tmp_path / "new", "newdep", "3.0", f"# newdep\n\n{_prose(90)}", {"@/LICENSE": _prose(91)}
    )
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    subprocess.run([*pip, "--prefix", str(tmp_path / "venv"), str(extra)], check=True)
    site = _site_packages(python)
    make_wheel(tmp_path / "new", "testtime", "0.1.0", requires=["numpy", "newdep>=3"])
    subprocess.run(
        [*pip, "--target", str(site), str(tmp_path / "new" / "testtime-0.1.0-py3-none-any.whl")],
        check=True,
    )
    check = (
        "from importlib import metadata as m; print(m.version('newdep'), m.requires('testtime'))"
    )
    seen = subprocess.check_output([str(python), "-c", check], text=True)
    assert seen.startswith("3.0") and "newdep>=3" in seen
    assert (site / "newdep-3.0.dist-info" / "LICENSE").is_file()

    after = _corpus_fingerprint(python, config, tmp_path / "after" / "documents.parquet")
    assert after == before
    # control: the same distribution pinned in the corpus directory is read
    wheels = [*_wheels(tmp_path / "wheels"), extra]
    pinned = pinned_corpus(tmp_path / "with-newdep", wheels)
    cfg = validate_config(
        {"data": {"domains": ["Pile-CC", "FreeLaw"], "docs_per_domain": 5, "prompts_per_domain": 1}}
    )
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    assert build_corpus(cfg, DemoRoots(stdlib, corpus)).info["fingerprint"] == before
    assert build_corpus(cfg, DemoRoots(stdlib, pinned)).info["fingerprint"] != before
