"""Per-variant job configs (testtime.methods.variant_job_config): each select/finetune job sees
exactly the keys its variant reads, and its view resolves to the same variant.

Run: `.venv/bin/pytest tests/unit/test_variant_keys.py` (well under a second).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from testtime.config import load_config_json, validate_config
from testtime.methods import selection_variants, variant_by_name, variant_job_config

TINY = Path(__file__).resolve().parents[1] / "workflow" / "tiny.yaml"


@pytest.fixture
def config() -> dict:
    return validate_config(yaml.safe_load(TINY.read_text()))


def _changed(config: dict, dotted: str, value: object) -> dict:
    other = copy.deepcopy(config)
    *parents, leaf = dotted.split(".")
    node = other
    for part in parents:
        node = node[part]
    node[leaf] = value
    return other


@pytest.mark.parametrize("job", ["select", "finetune"])
def test_each_view_resolves_to_its_variant(config: dict, job: str) -> None:
    for variant in selection_variants(config):
        view = load_config_json(json.dumps(variant_job_config(config, variant.name, job)))
        assert variant_by_name(view, variant.name) == variant


@pytest.mark.parametrize(
    ("key", "value", "stale"),
    [
        # every selector records sigma^2 at select.lam; the sweep variant has its own lambda'
        ("select.lam", 0.3, {"sift", "nn", "nn_f", "us", "random", "sift_mem0.5", "nn_mem0.5"}),
        ("select.adaptive_alphas", [2.0], {"sift"}),
        ("select.lam_sweep", [0.2], set()),  # sift_lam0.1 is gone, not changed
        ("index.type", "ivf", {"sift_mem0.5", "nn_mem0.5"}),
    ],
)
def test_a_key_changes_only_the_jobs_that_read_it(
    config: dict, key: str, value: object, stale: set
) -> None:
    other = _changed(config, key, value)
    names = {v.name for v in selection_variants(config)} & {
        v.name for v in selection_variants(other)
    }
    changed = {
        name
        for name in [*names, "base"]
        for job in ("select", "finetune")
        if not (name == "base" and job == "select")
        and variant_job_config(config, name, job) != variant_job_config(other, name, job)
    }
    assert changed == stale


def test_base_reads_no_select_key(config: dict) -> None:
    assert "select" not in variant_job_config(config, "base", "finetune")
    with pytest.raises(ValueError, match="job must be"):
        variant_job_config(config, "sift", "report")
