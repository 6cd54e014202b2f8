"""The method registry: selectors, the variants a config runs and the rows of the report.

One place for every method name, display label and table position:

* :data:`SELECTOR_SPECS` lists the selectors (``sift``, ``nn``, ``nn_f``, ``us``, ``random``:
  the schema's ``select.methods`` enum, in its order) with their label, the name of their
  function in :mod:`testtime.selection` and their column in the report's tables;
* a :class:`Variant` is a selector with its lambda' and the share of the memory it selects
  from: ``sift`` (select.lam), ``sift_lam0.01`` (a lam_sweep value), ``nn``, ``nn_f``, ``us``,
  ``random``, and for each ``select.memory_fractions`` value f ``sift_mem<f>`` and
  ``nn_mem<f>`` (the memory-size curve: both restricted to the same nested subset of the
  memory documents) (:func:`selection_variants`);
* ``base`` (zero steps) and ``sift_adaptive_a<alpha>`` (derived from the sift run) are report
  rows, not selection variants: :func:`report_rows` lists every row in table order.

Names are on-disk contracts (file names, table rows): they are built here and never parsed;
the report and figures take labels, lambda', alpha and fractions from the records.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NamedTuple


class Selector(NamedTuple):
    """A selection method: its name, display label, function in :mod:`testtime.selection`
    (by name, so that this module imports no torch) and column in the report's tables."""

    name: str
    label: str
    function: str
    order: int


SELECTOR_SPECS: tuple[Selector, ...] = (
    Selector("sift", "SIFT", "sift", order=4),
    Selector("nn", "NN", "nearest_neighbors", order=2),
    Selector("nn_f", "NN-F", "nearest_neighbors_fixed", order=3),
    Selector("us", "US", "uncertainty_sampling", order=1),
    Selector("random", "Random", "random_selection", order=5),
)
"""Every selector, in the order of the schema's ``select.methods`` enum (the tables order them
by ``order``, after ``base``)."""

SELECTOR_NAMES = tuple(s.name for s in SELECTOR_SPECS)
SELECTOR_BY_NAME = {s.name: s for s in SELECTOR_SPECS}

MEMORY_CURVE_SELECTORS = ("sift", "nn")


class Variant(NamedTuple):
    """A method variant or report row: name, selector (None for ``base``), display label,
    noise lambda' (None for ``base``), share of the memory used and, for adaptive SIFT, alpha."""

    name: str
    selector: str | None
    label: str
    lam: float | None
    memory_fraction: float = 1.0
    alpha: float | None = None


BASE = Variant("base", None, "Base", None)
"""The base model (zero steps): the first row of every table."""


def _fmt(x: float) -> str:
    return f"{x:g}"


def selection_variants(config: Mapping[str, Any]) -> list[Variant]:
    """Variants to select and fine-tune, in a stable order.

    >>> cfg = {"select": {"methods": ["sift", "nn"], "lam": 1.0, "lam_sweep": [0.01, 1.0],
    ...                   "memory_fractions": [0.5]}}
    >>> [v.name for v in selection_variants(cfg)]
    ['sift', 'nn', 'sift_lam0.01', 'sift_mem0.5', 'nn_mem0.5']
    >>> [v.label for v in selection_variants(cfg)]
    ['SIFT', 'NN', "SIFT λ'=0.01", 'SIFT 50% memory', 'NN 50% memory']
    """
    sel = config["select"]
    methods = sel.get("methods", [])  # a job's view of a sweep variant has neither key
    lam0 = float(sel["lam"]) if methods else None
    out = [Variant(m, m, SELECTOR_BY_NAME[m].label, lam0) for m in methods]
    for lam in sel.get("lam_sweep", []):
        if float(lam) != lam0 or "sift" not in methods:
            label = f"{SELECTOR_BY_NAME['sift'].label} λ'={_fmt(lam)}"
            out.append(Variant(f"sift_lam{_fmt(lam)}", "sift", label, float(lam)))
    for fraction in sel.get("memory_fractions", []):
        for m in MEMORY_CURVE_SELECTORS:
            if m in sel["methods"]:
                name = memory_variant_name(m, fraction)
                label = f"{SELECTOR_BY_NAME[m].label} {100 * float(fraction):g}% memory"
                out.append(Variant(name, m, label, lam0, float(fraction)))
    return out


def _variant_select_keys(config: Mapping[str, Any], variant: Variant) -> dict[str, Any]:
    """The ``select`` keys that define ``variant`` alone (:func:`selection_variants` of them
    yields it under its name), taken from ``config``."""
    sel = config["select"]
    if (
        variant.selector == "sift"
        and variant.name != variant.selector
        and variant.memory_fraction == 1
    ):
        return {"lam_sweep": [variant.lam]}  # a sweep variant: its own lambda', not select.lam
    # every selector records the query's sigma^2 at select.lam (and US chooses by it)
    keys: dict[str, Any] = {"methods": [variant.selector], "lam": sel["lam"]}
    if variant.memory_fraction < 1:
        keys["memory_fractions"] = [variant.memory_fraction]
    return keys


def variant_job_config(config: Mapping[str, Any], name: str, job: str) -> dict[str, Any]:
    """The config a ``select`` or ``finetune`` job of variant ``name`` reads, and nothing else.

    A variant's jobs see only the keys its results depend on, so that changing another
    variant's key (a sweep value, ``select.adaptive_alphas`` for a baseline) or a key no job of it
    reads makes none of them stale. ``base`` fine-tunes nothing: no ``select`` key at all.
    Every selector records the query's posterior variance at ``select.lam`` (and US chooses by
    it), so every variant on the main lambda' reads it; a sweep variant reads only its own value.

    >>> cfg = {"seed": 0, "device": "cpu", "index": {"type": "flat"}, "finetune": {"lr": 0.1},
    ...        "select": {"methods": ["sift", "nn"], "lam": 1.0, "lam_sweep": [0.1], "n": 2,
    ...                   "k": 4, "adaptive_alphas": [1.0], "memory_fractions": []}}
    >>> variant_job_config(cfg, "base", "finetune")
    {'seed': 0, 'device': 'cpu', 'finetune': {'lr': 0.1}}
    >>> variant_job_config(cfg, "sift_lam0.1", "select")["select"]
    {'n': 2, 'k': 4, 'lam_sweep': [0.1]}
    >>> variant_job_config(cfg, "sift", "finetune")["select"]
    {'n': 2, 'methods': ['sift'], 'lam': 1.0, 'adaptive_alphas': [1.0]}
    """
    if job not in ("select", "finetune"):
        raise ValueError(f"job must be 'select' or 'finetune', got {job!r}")
    out: dict[str, Any] = {"seed": config["seed"], "device": config["device"]}
    if job == "finetune":
        out["finetune"] = copy.deepcopy(config["finetune"])
        if name == BASE.name:
            return out
    variant = variant_by_name(config, name)
    sel = config["select"]
    select: dict[str, Any] = {"n": sel["n"]}
    if job == "select":
        select["k"] = sel["k"]
        if variant.memory_fraction < 1:  # a memory subset is searched again
            out["index"] = copy.deepcopy(config["index"])
    select |= copy.deepcopy(_variant_select_keys(config, variant))
    if job == "finetune" and variant.name == "sift":  # adaptive rows come from the sift run
        select["adaptive_alphas"] = list(sel["adaptive_alphas"])
    out["select"] = select
    return out


def finetuned_method_names(config: Mapping[str, Any]) -> list[str]:
    """Every method with fine-tuning results: ``base`` and each selection variant, in order.

    >>> finetuned_method_names({"select": {"methods": ["sift", "nn"], "lam": 1.0}})
    ['base', 'sift', 'nn']
    """
    return [BASE.name, *(v.name for v in selection_variants(config))]


def adaptive_variants(config: Mapping[str, Any]) -> list[Variant]:
    """Report rows of adaptive SIFT, one per ``select.adaptive_alphas`` value (config order).

    >>> cfg = {"select": {"methods": ["sift"], "lam": 1.0, "adaptive_alphas": [2.0]}}
    >>> [(v.name, v.label, v.alpha) for v in adaptive_variants(cfg)]
    [('sift_adaptive_a2', 'SIFT adaptive α=2', 2.0)]
    """
    lam0 = float(config["select"]["lam"])
    label = SELECTOR_BY_NAME["sift"].label
    return [
        Variant(adaptive_name(a), "sift", f"{label} adaptive α={_fmt(a)}", lam0, alpha=float(a))
        for a in config["select"].get("adaptive_alphas", [])
    ]


def report_rows(config: Mapping[str, Any]) -> list[Variant]:
    """Every row the report of ``config`` may hold, in table order: ``base``, the selectors
    (by :attr:`Selector.order`), the lambda' sweep (smallest first), adaptive SIFT (config
    order), the memory-subset variants (smallest memory first).

    >>> cfg = {"select": {"methods": ["sift", "nn", "us"], "lam": 1.0, "lam_sweep": [1.0, 0.1],
    ...                   "adaptive_alphas": [1.0], "memory_fractions": [0.5, 0.25]}}
    >>> [v.name for v in report_rows(cfg)]  # doctest: +NORMALIZE_WHITESPACE
    ['base', 'us', 'nn', 'sift', 'sift_lam0.1', 'sift_adaptive_a1', 'sift_mem0.25',
     'nn_mem0.25', 'sift_mem0.5', 'nn_mem0.5']
    """
    variants = selection_variants(config)
    whole = [v for v in variants if v.memory_fraction == 1]
    plain = [v for v in whole if v.name == v.selector]
    sweep = [v for v in whole if v.name != v.selector]
    subsets = [v for v in variants if v.memory_fraction < 1]
    return [
        BASE,
        *sorted(plain, key=lambda v: SELECTOR_BY_NAME[v.name].order),
        *sorted(sweep, key=lambda v: v.lam),
        *adaptive_variants(config),
        *sorted(subsets, key=lambda v: v.memory_fraction),
    ]


def memory_variant_name(selector: str, fraction: float) -> str:
    """Name of ``selector`` restricted to a ``fraction`` of the memory.

    >>> memory_variant_name("sift", 0.25)
    'sift_mem0.25'
    """
    return f"{selector}_mem{_fmt(fraction)}"


def memory_fraction_tag(fraction: float) -> str:
    """File tag of a memory subset (``candidates.<tag>.parquet``).

    >>> memory_fraction_tag(0.5)
    'mem0.5'
    """
    return f"mem{_fmt(fraction)}"


def variant_by_name(config: Mapping[str, Any], name: str) -> Variant:
    """Look up a variant by name; ValueError listing the known names otherwise."""
    variants = {v.name: v for v in selection_variants(config)}
    if name not in variants:
        raise ValueError(f"unknown method {name!r}; this config runs {sorted(variants)}")
    return variants[name]


def adaptive_name(alpha: float) -> str:
    """Report row name of adaptive SIFT at ``alpha``.

    >>> adaptive_name(0.5)
    'sift_adaptive_a0.5'
    """
    return f"sift_adaptive_a{_fmt(alpha)}"
