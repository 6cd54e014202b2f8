"""DeepMind Mathematics documents generated offline with the ``mathematics-dataset`` package.

The package (1.0.1) predates numpy 2 and current sympy; two runtime shims make it import and run
(``sympy.solvers.diophantine.base_solution_linear``, ``np.object``). Generators that still fail
(about 40% of module x level, mostly ``ndarray.itemset`` removed in numpy 2) are found by a seeded
probe and skipped; their names are returned for the provenance record. A document is
``examples_per_doc`` question/answer pairs from one generator, like a Pile DM Mathematics file.
Each document seeds Python's and numpy's global RNGs (the package uses both) from
``derive_seed(seed, "math", index)`` and restores them afterwards, so documents do not depend on
generation order.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from testtime.seeding import derive_seed

LEVELS = ("easy", "medium", "hard")
PROBE_SAMPLES = 3


class MathGenerators(NamedTuple):
    """Working generators ``(name, fn)`` sorted by name, and ``{name: error}`` of skipped ones."""

    working: list[tuple[str, Callable[[], Any]]]
    skipped: dict[str, str]


@contextlib.contextmanager
def _compat() -> Iterator[None]:
    """Shims for mathematics-dataset 1.0.1 on numpy 2 / sympy >= 1.12, removed afterwards."""
    import sympy.solvers.diophantine  # noqa: F401  (ensures the module is in sys.modules)
    from sympy.solvers.diophantine.diophantine import base_solution_linear

    dioph = sys.modules["sympy.solvers.diophantine"]
    if not hasattr(dioph, "base_solution_linear"):
        dioph.base_solution_linear = base_solution_linear
    had_object = "object" in np.__dict__
    setattr(np, "object", object)  # noqa: B010  (the package reads np.object at call time)
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
        if not had_object:
            delattr(np, "object")


def _seed_globals(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (the package draws from the legacy global RNG)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Callable[[], Any]]:
    out: dict[str, Callable[[], Any]] = {}
    for key, value in tree.items():
        name = f"{prefix}__{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _entropy_fn(level: int, num_levels: int = 3) -> Callable[[tuple[float, float]], tuple]:
    lo, hi = level / num_levels, (level + 1) / num_levels

    def modify(range_: tuple[float, float]) -> tuple[float, float]:
        length = range_[1] - range_[0]
        return (range_[0] + lo * length, range_[0] + hi * length)

    return modify


def load_generators(seed: int) -> MathGenerators:
    """All train generators at the three difficulty levels, probed with the seed."""
    with _compat():
        from mathematics_dataset.modules import modules

        named: dict[str, Callable[[], Any]] = {}
        for level, level_name in enumerate(LEVELS):
            for name, fn in _flatten(modules.train(_entropy_fn(level))).items():
                named[f"{name}@{level_name}"] = fn
        working, skipped = [], {}
        for name in sorted(named):
            _seed_globals(derive_seed(seed, "math-probe", name))
            try:
                for _ in range(PROBE_SAMPLES):
                    named[name]()
            except Exception as exc:  # the package raises anything from numpy/sympy internals
                skipped[name] = f"{type(exc).__name__}: {exc}"[:200]
            else:
                working.append((name, named[name]))
    return MathGenerators(working, skipped)


def generate_document(
    generators: MathGenerators, index: int, n_examples: int, seed: int
) -> tuple[str, str] | None:
    """Document ``index``: ``(source, text)`` of ``n_examples`` "question\\nanswer" pairs.

    Returns None if its generator keeps failing (then the caller moves to the next index).
    """
    from mathematics_dataset import generate_settings

    if not generators.working:
        raise ValueError("mathematics-dataset: every generator failed its probe")
    name, fn = generators.working[index % len(generators.working)]
    lines: list[str] = []
    failures = 0
    with _compat():
        _seed_globals(derive_seed(seed, "math", index))
        while len(lines) < n_examples and failures < 3 * n_examples:
            try:
                problem = fn()
                question, answer = str(problem.question), str(problem.answer)
            except Exception:  # rare data-dependent failures inside the package
                failures += 1
                continue
            if (
                len(question) > generate_settings.MAX_QUESTION_LENGTH
                or len(answer) > generate_settings.MAX_ANSWER_LENGTH
            ):
                continue
            lines.append(f"{question}\n{answer}")
    if len(lines) < n_examples:
        return None
    return f"mathematics_dataset:{name}#{index}", "\n".join(lines) + "\n"
