"""Config schema and loader: defaults, errors that name the key, and the shipped configs.

Checks the schema is strict and self-documenting (type, description, default on every leaf),
that config/*.yaml validate and comment every key, and that the method enum matches the
selector registry.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testtime.config import ConfigError, load_config, load_schema, validate_config
from testtime.methods import (
    SELECTOR_NAMES,
    SELECTOR_SPECS,
    adaptive_name,
    report_rows,
    selection_variants,
    variant_by_name,
)

REPO = Path(__file__).resolve().parents[2]


def _leaves(schema: dict, prefix: str = ""):
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if sub.get("type") == "object" and "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{path} must be strict"
            yield from _leaves(sub, path + ".")
        else:
            yield path, sub


def test_schema_leaves_have_type_description_default() -> None:
    schema = load_schema()
    assert schema["additionalProperties"] is False
    for path, sub in _leaves(schema):
        assert "type" in sub, path
        assert sub.get("description"), path
        assert "default" in sub, path


def test_defaults_fill_every_key() -> None:
    cfg = validate_config({})
    assert cfg["select"] == {
        "k": 200,
        "n": 20,
        "lam": 1.0,
        "methods": ["sift", "nn", "nn_f", "us", "random"],
        "adaptive_alphas": [],
        "lam_sweep": [],
        "memory_fractions": [],
    }
    assert cfg["data"]["split"] == {"pretrain": 0.6, "memory": 0.28, "test": 0.12}


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"selec": {}}, "'selec' was unexpected"),
        ({"select": {"k": "ten"}}, "select.k"),
        ({"select": {"lam": -1.0}}, "select.lam"),
        ({"select": {"k": 5, "n": 6}}, "select.n"),
        ({"select": {"methods": ["sift", "bogus"]}}, "select.methods.1"),
        ({"data": {"split": {"pretrain": 0.5, "memory": 0.5, "test": 0.5}}}, "data.split"),
        ({"data": {"seq_len": 512}}, "data.seq_len"),
        ({"model": {"n_embd": 30, "n_head": 4}}, "model.n_head"),
        ({"model": {"source": "pretrained"}}, "model.name_or_path"),
        ({"finetune": {"eval_at": [25]}}, "finetune.eval_at"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_values_name_the_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate_config(raw)


def test_nn_free_config_may_select_more_than_k() -> None:
    cfg = validate_config({"select": {"k": 5, "n": 6, "methods": ["sift", "nn_f"]}})
    assert cfg["select"]["n"] == 6


@pytest.mark.parametrize(
    "name", ["config.yaml", "paper.yaml", "sweep.yaml", "split.yaml", "second.yaml"]
)
def test_shipped_configs_validate_and_comment_every_key(name: str) -> None:
    path = REPO / "config" / name
    load_config(path)
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        assert "#" in line, f"{name}:{number} has no comment: {line!r}"


def test_load_config_overrides_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nselect:\n  k: 30\n")
    cfg = load_config(path, {"select.n": 7})
    assert (cfg["name"], cfg["select"]["k"], cfg["select"]["n"]) == ("x", 30, 7)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_method_enum_matches_selector_registry() -> None:
    enum = load_schema()["properties"]["select"]["properties"]["methods"]["items"]["enum"]
    assert enum == [s.name for s in SELECTOR_SPECS]
    assert tuple(enum) == SELECTOR_NAMES
    selection = pytest.importorskip("testtime.selection")
    assert list(selection.SELECTORS) == enum
    for spec in SELECTOR_SPECS:
        assert selection.SELECTORS[spec.name] is getattr(selection, spec.function)


def test_report_rows_carry_labels_and_parameters() -> None:
    cfg = validate_config(
        {
            "select": {
                "lam": 0.5,
                "lam_sweep": [1.0, 0.1],
                "adaptive_alphas": [2.0, 0.5],
                "memory_fractions": [0.5, 0.25],
            }
        }
    )
    rows = report_rows(cfg)
    assert [(v.name, v.label) for v in rows] == [
        ("base", "Base"),
        ("us", "US"),
        ("nn", "NN"),
        ("nn_f", "NN-F"),
        ("sift", "SIFT"),
        ("random", "Random"),
        ("sift_lam0.1", "SIFT λ'=0.1"),
        ("sift_lam1", "SIFT λ'=1"),
        ("sift_adaptive_a2", "SIFT adaptive α=2"),
        ("sift_adaptive_a0.5", "SIFT adaptive α=0.5"),
        ("sift_mem0.25", "SIFT 25% memory"),
        ("nn_mem0.25", "NN 25% memory"),
        ("sift_mem0.5", "SIFT 50% memory"),
        ("nn_mem0.5", "NN 50% memory"),
    ]
    by_name = {v.name: v for v in rows}
    assert by_name["sift_lam0.1"][1:] == ("sift", "SIFT λ'=0.1", 0.1, 1.0, None)
    assert by_name["sift_adaptive_a0.5"].alpha == 0.5
    assert by_name["nn_mem0.25"][1:] == ("nn", "NN 25% memory", 0.5, 0.25, None)
    assert by_name["base"].selector is None


def test_variants_and_names() -> None:
    cfg = validate_config({"select": {"lam": 0.1, "lam_sweep": [0.01, 0.1, 1.0]}})
    names = [v.name for v in selection_variants(cfg)]
    assert names == ["sift", "nn", "nn_f", "us", "random", "sift_lam0.01", "sift_lam1"]
    assert variant_by_name(cfg, "sift_lam0.01").lam == 0.01
    with pytest.raises(ValueError, match="unknown method"):
        variant_by_name(cfg, "sift_lam5")
    assert adaptive_name(1.0) == "sift_adaptive_a1"


def test_protocol_is_checked_before_any_job() -> None:
    with pytest.raises(ConfigError, match=r"'data\.protocol'"):
        validate_config({"data": {"protocol": "both"}})
    assert validate_config({})["data"]["protocol"] == "same"


def test_prompt_must_fit_the_model_context() -> None:
    split = {"protocol": "split", "prompt_tokens": 128, "eval_tokens": 200}
    with pytest.raises(ConfigError, match=r"data\.prompt_tokens' \+ 'data\.eval_tokens'.*256"):
        validate_config({"data": split, "model": {"n_positions": 256}})
    # the same lengths fit under `same`, which scores eval_tokens alone
    validate_config({"data": {**split, "protocol": "same"}, "model": {"n_positions": 256}})
    with pytest.raises(ConfigError, match=r"'data\.eval_tokens': 300 exceeds"):
        validate_config({"data": {"eval_tokens": 300}, "model": {"n_positions": 256}})


def test_docs_per_domain_override() -> None:
    from testtime.corpus.split import DocumentCollector

    with pytest.raises(ConfigError, match=r"data\.docs_per_domain_override"):
        validate_config({"data": {"docs_per_domain_override": {"FreeLaw": 2}}})
    assert DocumentCollector(["Github"], 5, 300, {"Enron Emails": 3}).caps == {"Github": 5}
    assert DocumentCollector(["Github", "FreeLaw"], 5, 300, {"FreeLaw": 3}).caps == {
        "Github": 5,
        "FreeLaw": 3,
    }
    # an override only lowers the cap: a smaller docs_per_domain wins
    assert DocumentCollector(["FreeLaw"], 5, 300, {"FreeLaw": 270}).caps == {"FreeLaw": 5}


def test_memory_fraction_variants() -> None:
    cfg = validate_config({"select": {"methods": ["sift", "nn", "us"], "memory_fractions": [0.25]}})
    subsets = [v for v in selection_variants(cfg) if v.memory_fraction < 1]
    assert [(v.name, v.selector, v.memory_fraction) for v in subsets] == [
        ("sift_mem0.25", "sift", 0.25),
        ("nn_mem0.25", "nn", 0.25),
    ]
    with pytest.raises(ConfigError, match=r"select\.memory_fractions"):
        validate_config({"select": {"memory_fractions": [1.0]}})


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"select": {"lam": float("nan")}}, "select.lam"),
        ({"finetune": {"lr": float("nan")}}, "finetune.lr"),
        ({"finetune": {"lr": float("inf")}}, "finetune.lr"),
        ({"select": {"adaptive_alphas": [0.1, float("-inf")]}}, "select.adaptive_alphas.1"),
        ({"model": {"pretrain": {"weight_decay": float("nan")}}}, "model.pretrain.weight_decay"),
    ],
)
def test_nan_and_infinity_are_refused(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}': must be a finite"):
        validate_config(raw)


def test_yaml_nan_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("select:\n  lam: .nan\n")
    with pytest.raises(ConfigError, match="'select.lam': must be a finite number, got nan"):
        load_config(path)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"select": {"k": 16.0}}, "select.k"),
        ({"finetune": {"shards": 2.0}}, "finetune.shards"),
        ({"finetune": {"eval_at": [1.0]}}, "finetune.eval_at.0"),
        ({"seed": True}, "seed"),
    ],
)
def test_integers_must_be_ints(raw: dict, key: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"config key '{re.escape(key)}': .* not of type 'integer'"
    ):
        validate_config(raw)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"name": "tiny\n"}, "name"),
        ({"name": "a/b"}, "name"),
        ({"device": "cpu\n"}, "device"),
    ],
)
def test_patterns_match_the_whole_value(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        validate_config(raw)
    assert validate_config({"name": "tiny-1.0_a", "device": "cuda:1"})["name"] == "tiny-1.0_a"


def test_snakemake_validation_agrees_on_the_name_pattern() -> None:
    """The schema is also Snakemake's: its validator must refuse the trailing newline too."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    from testtime.config import SCHEMA_PATH

    cfg = validate_config({})
    cfg["name"] = "tiny\n"
    with pytest.raises(WorkflowError):
        validate(cfg, schema=str(SCHEMA_PATH))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("select:\n  k: [1, 2\nname: x\n", "line 3: invalid YAML"),
        ("select: {k: 1}\n  n: 2\n", "line 2: invalid YAML"),
        ("- name\n- x\n", "line 1: expected a mapping of config keys, got a list"),
        ("# just a comment\n\n", "is empty"),
        ("", "is empty"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path: Path, capsys, text: str, message: str):
    from testtime.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)
    assert main(["corpus", "--config", str(path), "--out", str(tmp_path / "d.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err
    assert not (tmp_path / "d.parquet").exists()


def test_config_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_slices_are_validated_but_not_filled() -> None:
    from testtime.config import config_slice_json, load_config_json

    full = validate_config({"select": {"k": 30, "n": 5}, "finetune": {"lr": 0.01}})
    text = config_slice_json(full, ["seed", "select.k", "finetune"])
    cfg = load_config_json(text)
    assert cfg == {"seed": 0, "select": {"k": 30}, "finetune": full["finetune"]}
    with pytest.raises(KeyError):  # a section the rule did not declare is absent, not defaulted
        cfg["model"]
    with pytest.raises(ConfigError, match="'select.k'"):
        load_config_json('{"select": {"k": 16.0}}')
    with pytest.raises(ConfigError, match="'select.n'"):  # cross-field checks of present keys
        load_config_json('{"select": {"k": 5, "n": 6, "methods": ["nn"]}}')
    with pytest.raises(ConfigError, match="--config-json: expected a JSON object"):
        load_config_json("[1]")
