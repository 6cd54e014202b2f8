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


def text_prompt_id(prompt: str) -> int:
    """The prompt id of a prompt given as text (the API's prompts have no dataset id): 63 bits
    of the sha256 of its UTF-8, so a prompt's seeds do not depend on the other prompts.

    >>> text_prompt_id("a prompt") == text_prompt_id("a prompt") != text_prompt_id("a prompt.")
    True
    """
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def selection_generator(seed: int, prompt_id: int, variant: str) -> torch.Generator:
    """The CPU generator of one prompt's random selection by one method variant (e.g.
    ``random``): the select stage's and :meth:`testtime.TestTimeTuner.select`'s, so both pick
    the same sequences for the same seed, prompt id and candidates."""
    return generator_for(seed, prompt_id, variant)
