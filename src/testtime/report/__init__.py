"""The report stage: the bits-per-byte table, metrics.json and figures from per-prompt results.

Conventions (docs/pipeline.md section 6):

* a method's result for a prompt is its row at the prompt's final step (the largest ``steps``;
  ``base`` = 0); adaptive SIFT at alpha uses the sift row at that prompt's stop step
  (:mod:`~testtime.report.rows`);
* ``bpb_mean`` of a set of prompts is byte-weighted: ``sum(nll) / (ln 2 * sum(n_bytes))``;
* ``bpb_se`` is the bootstrap standard error of that ratio over prompts
  (:func:`scipy.stats.bootstrap`, ``standard_error``: the standard deviation, ddof 1, over
  ``report.bootstrap`` resamples of prompts drawn from ``numpy.random.default_rng(seed)``; the
  same resamples for every method with the same prompts, so SEs of different methods are
  comparable; :mod:`~testtime.report.estimates`);
* paired differences are means of per-prompt bpb differences with a bootstrap SE (the two
  methods' bpb resampled together, ``paired=True``);
* the paper's unit (bpb in % of the base model), byte-weighted paired differences and the
  uncertainty-gain correlations are :mod:`testtime.statistics`;
* every comparison is over one prompt set: a configured method without results, or a method
  lacking prompts that others have, is an error (``--allow-partial`` compares over the prompts
  all methods have and records what is missing in metrics.json ``partial``); prompts whose
  fine-tuning hit a NaN loss in any method are left out of every method's numbers and listed
  (:mod:`~testtime.report.checks`).

Modules: ``checks`` (inputs), ``rows`` (per-prompt rows), ``estimates`` (bootstrap estimates),
``tables``, ``metrics`` (one function per metrics.json key), ``outputs`` (which files a config
has, their flags, writing them), ``build`` (:func:`build_report`). The names below are
imported on first use, so that importing :mod:`testtime.report.outputs` (the CLI's parser, the
Snakefile) does not load pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "KEY": "checks",
    "aggregate": "checks",
    "check_complete": "checks",
    "validate_per_prompt": "checks",
    "final_rows": "rows",
    "report_order": "rows",
    "rows_at_steps": "rows",
    "split_ok": "rows",
    "bootstrap_bpb_se": "estimates",
    "bootstrap_paired_se": "estimates",
    "byte_weighted_bpb": "estimates",
    "correlations": "estimates",
    "paired_difference": "estimates",
    "MEMORY_CURVE_COLUMNS": "tables",
    "bpb_table": "tables",
    "memory_size_curve": "tables",
    "steps_curve": "tables",
    "REPORT_OUTPUTS": "outputs",
    "report_argv": "outputs",
    "report_outputs": "outputs",
    "Report": "build",
    "build_report": "build",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
