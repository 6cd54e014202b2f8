"""Per-item seeds derived from (global seed, item id), so results do not depend on sharding."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed from the global seed and any keys (e.g. prompt id, method name).

    >>> derive_seed(0, 5) == derive_seed(0, 5)
    True
    >>> derive_seed(0, 5) != derive_seed(0, 6)
    True
    """
    blob = ":".join(str(k) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & ((1 << 63) - 1)


def generator_for(
    seed: int, *keys: int | str, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A torch.Generator seeded with :func:`derive_seed`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen
