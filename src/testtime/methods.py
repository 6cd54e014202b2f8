"""Names of the method variants a run evaluates, derived from the config.

A variant is a selector from :data:`testtime.selection.SELECTORS` with its lambda' and the
share of the memory it selects from: ``sift`` (select.lam), ``sift_lam0.01`` (a lam_sweep
value), ``nn``, ``nn_f``, ``us``, ``random``, and for each ``select.memory_fractions`` value f
``sift_mem<f>`` and ``nn_mem<f>`` (the memory-size curve: both restricted to the same nested
subset of the memory documents). ``base`` (zero steps) and ``sift_adaptive_a<alpha>`` (derived
from the sift run) are report rows, not selection variants.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

SELECTOR_NAMES = ("sift", "nn", "nn_f", "us", "random")


MEMORY_CURVE_SELECTORS = ("sift", "nn")


class Variant(NamedTuple):
    """A selection method variant: selector name, noise lambda', share of the memory used."""

    name: str
    selector: str
    lam: float
    memory_fraction: float = 1.0


def _fmt(x: float) -> str:
    return f"{x:g}"


def selection_variants(config: Mapping[str, Any]) -> list[Variant]:
    """Variants to select and fine-tune, in a stable order.

    >>> cfg = {"select": {"methods": ["sift", "nn"], "lam": 1.0, "lam_sweep": [0.01, 1.0],
    ...                   "memory_fractions": [0.5]}}
    >>> [v.name for v in selection_variants(cfg)]
    ['sift', 'nn', 'sift_lam0.01', 'sift_mem0.5', 'nn_mem0.5']
    """
    sel = config["select"]
    out = [Variant(m, m, float(sel["lam"])) for m in sel["methods"]]
    for lam in sel.get("lam_sweep", []):
        if float(lam) != float(sel["lam"]) or "sift" not in sel["methods"]:
            out.append(Variant(f"sift_lam{_fmt(lam)}", "sift", float(lam)))
    for fraction in sel.get("memory_fractions", []):
        for m in MEMORY_CURVE_SELECTORS:
            if m in sel["methods"]:
                name = memory_variant_name(m, fraction)
                out.append(Variant(name, m, float(sel["lam"]), float(fraction)))
    return out


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
