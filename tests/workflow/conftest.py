"""The one uninterrupted tiny workflow run that the workflow and DVC tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflow.test_workflow import RUN, _assert_ok, _run, _workdir


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny workflow run once, uninterrupted; the workdir (shared, read-only to tests that
    copy it; test_workflow's dry-run tests only add config files)."""
    clean = _workdir(tmp_path_factory.mktemp("clean"))
    _assert_ok(_run(clean, RUN))
    return clean
