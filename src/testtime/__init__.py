"""testtime: test-time fine-tuning of language models with SIFT data selection.

Library API (imported lazily, so ``import testtime`` stays light)::

    from testtime import Memory, TestTimeTuner
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Memory": "testtime.memory",
    "build_memory": "testtime.memory",
    "TestTimeTuner": "testtime.tuner",
    "Adaptation": "testtime.tuner",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'testtime' has no attribute {name!r}")
