"""DeepMind Mathematics documents generated offline with the ``mathematics-dataset`` package.

The package (1.0.1) predates numpy 2 and current sympy; two runtime shims make it import and run
(``sympy.solvers.diophantine.base_solution_linear``, ``np.object``). Generators that still fail
(about a fifth of module x level: ``ndarray.itemset`` is gone in numpy 2) are found by a seeded
probe and skipped; their names are returned for the provenance record. A document is
``examples_per_doc`` question/answer pairs from one generator, like a Pile DM Mathematics file.
Each document seeds Python's, numpy's and sympy's global RNGs (the package uses all three) from
``derive_seed(seed, "math", index)``, so documents do not depend on generation order.

The package also orders things by ``set`` iteration: of entity objects (by ``id``, so by memory
layout) and of letters (by string hash, so by ``PYTHONHASHSEED``). Two more shims make the
first ordered (insertion order, sorted letters) and :func:`generate_in_subprocess` runs
generation in a child with ``PYTHONHASHSEED=0``, which also keeps the shims out of the caller's
process and enforces the time cap with a timeout.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import resource
import signal
import subprocess
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
    from mathematics_dataset.util import composition

    composition.expand_entities = _expand_entities_ordered
    composition.Context.pop = _pop_sorted
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


def _expand_entities_ordered(context: Any, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """``composition.expand_entities`` with entities deduplicated in insertion order (the
    original shuffles a ``set`` of objects, whose order follows their memory addresses)."""
    from mathematics_dataset.util import composition

    kwargs = kwargs.copy()
    entities = dict.fromkeys(context.child_entities)
    for key, value in kwargs.items():
        if isinstance(value, composition.Entity):
            entities[value] = None
            kwargs[key] = value.handle
    ordered = list(entities)
    random.shuffle(ordered)
    parts = []
    for entity in ordered:
        parts.append(entity.child_description)
        if not entity.expression_used:
            parts.append(entity.description)
    return " ".join(p for p in parts if p), kwargs


def _pop_sorted(self: Any) -> str:
    """``composition.Context.pop`` choosing from the sorted free letters (not set order)."""
    from mathematics_dataset.util import composition

    allowed = sorted(
        composition._ALLOWED_SYMBOLS.difference(self._relation_symbols)
        .difference(self._self_symbols)
        .difference(self._child_symbols)
    )
    if not allowed:
        raise ValueError("Ran out of symbols")
    symbol = random.choice(allowed)
    self._self_symbols.add(symbol)
    return symbol


def _seed_globals(seed: int) -> None:
    import sympy.core.random

    random.seed(seed)
    sympy.core.random.seed(seed)  # randprime draws from sympy's own generator
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


def generate_documents(seed: int, count: int, n_examples: int, min_chars: int) -> dict[str, Any]:
    """Documents 0, 1, ... until ``count`` have at least ``min_chars`` characters.

    Returns ``{"documents": [[source, text], ...], "generators": [...], "skipped": {...}}``.
    """
    from tqdm.auto import tqdm

    gens = load_generators(seed)
    docs: list[tuple[str, str]] = []
    index = 0
    with tqdm(total=count, desc="DM Mathematics", unit="doc") as bar:
        while len(docs) < count and index < 3 * count + 10:
            doc = generate_document(gens, index, n_examples, seed)
            if doc is not None and len(doc[1]) >= min_chars:
                docs.append(doc)
                bar.update(1)
            index += 1
    return {
        "documents": docs,
        "generators": [name for name, _ in gens.working],
        "skipped": gens.skipped,
    }


def generate_in_subprocess(
    seed: int, count: int, n_examples: int, min_chars: int, max_seconds: float
) -> dict[str, Any]:
    """:func:`generate_documents` in a child process with ``PYTHONHASHSEED=0``.

    ``max_seconds`` caps the child's own CPU time (RLIMIT_CPU), not the wall clock, so a busy
    machine cannot trip it; the wall clock is only a backstop at ten times that. ValueError
    naming data.demo.math_max_seconds when either cap is hit.
    """
    args = json.dumps([seed, count, n_examples, min_chars])
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cpu_seconds = max(1, math.ceil(max_seconds))
    too_long = ValueError(
        f"config key 'data.demo.math_max_seconds': math generation took more than "
        f"{max_seconds} s of CPU time; raise it or lower data.docs_per_domain"
    )

    def limit_cpu() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))

    try:
        done = subprocess.run(
            [sys.executable, "-m", "testtime.corpus.mathgen", args],
            env=env,
            stdout=subprocess.PIPE,
            timeout=10 * max_seconds,
            check=False,
            preexec_fn=limit_cpu,
        )
    except subprocess.TimeoutExpired as exc:
        raise too_long from exc
    if done.returncode == -signal.SIGXCPU:
        raise too_long
    if done.returncode != 0:
        raise RuntimeError(f"math generation failed with exit status {done.returncode}")
    return json.loads(done.stdout)


if __name__ == "__main__":
    seed_, count_, n_examples_, min_chars_ = json.loads(sys.argv[1])
    json.dump(generate_documents(seed_, count_, n_examples_, min_chars_), sys.stdout)
