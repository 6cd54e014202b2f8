"""Test-time fine-tuning on your own prompts: :class:`TestTimeTuner`.

For each prompt x*: embed it with the memory's embedder, pre-select the ``k`` nearest memory
sequences (Faiss), select ``n`` of them with a selector of :data:`testtime.selection.SELECTORS`
(SIFT by default; with ``alpha`` the adaptive-SIFT rule
:func:`testtime.selection.adaptive_stop_steps` ends the selection early), and take one optimizer
step per selected sequence from the base weights (:class:`testtime.finetune.Finetuner`; in
``lora`` mode B prompts at once through :mod:`testtime.finetune.lora`). Then generate or score
with the adapted weights. Each prompt starts from the base model; the base weights are never
modified (:meth:`TestTimeTuner.base_fingerprint` hashes them).

Defaults are the workflow's: ``n``, ``k`` and ``lam`` are the config schema's ``select.*``
defaults, ``mode``, ``lr``, ``optimizer``, ``lora`` its ``finetune.*`` defaults
(:data:`DEFAULTS`), the same values ``testtime generate --help`` shows.

Example (``mem/`` built with ``testtime memory build --tokenizer path/to/model ...``)::

    from testtime import Memory, TestTimeTuner

    memory = Memory.open("mem/")
    tuner = TestTimeTuner.from_pretrained("path/to/model", memory)  # the workflow's defaults
    result = tuner.adapt("The Fourier transform of a Gaussian")   # selection + adapter
    text = tuner.generate("The Fourier transform of a Gaussian", max_new_tokens=64)
    bpb = tuner.score("The Fourier transform of a Gaussian", text)  # bits per byte of text
    before = tuner.score("The Fourier transform of a Gaussian", adapted=False)  # of the prompt
    after = tuner.score("The Fourier transform of a Gaussian")
    many = tuner.generate(["prompt one", "prompt two"])              # batched adaptation
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from testtime.adapters import MODES, select_trainable, wrap_lora
from testtime.bpb import bits_per_byte, make_windows, model_context, score_windows
from testtime.config import validate_config
from testtime.finetune import STATUS_OK, Finetuner, PromptJob, TrainSettings
from testtime.finetune.driver import drive
from testtime.finetune.lora import LoraEngine, StackedLora
from testtime.memory import Memory
from testtime.seeding import derive_seed, selection_generator, text_prompt_id
from testtime.selection import SELECTORS, adaptive_stop_steps

#: the workflow config schema's defaults (``DEFAULTS["select"]["lam"]``, ...)
DEFAULTS = validate_config({})
_SELECT, _FINETUNE = DEFAULTS["select"], DEFAULTS["finetune"]
DEFAULT_LORA = dict(_FINETUNE["lora"])


class Adaptation(NamedTuple):
    """What test-time fine-tuning did for one prompt.

    Attributes:
        prompt: the prompt.
        seq_ids: memory sequence ids trained on, in order (repeats possible), length ``steps``.
        texts: their decoded texts.
        variances: σ²(x* | first i selected sequences), i = 0..n (the selector's full trace;
            column 0 is k(x*, x*) = 1 for unit-norm embeddings).
        steps: gradient steps taken (n, or fewer after an adaptive stop).
        adapter: the trained parameters by name (LoRA factors, or the trained weights in
            ``full`` / ``head`` mode), detached CPU copies.
    """

    prompt: str
    seq_ids: list[int]
    texts: list[str]
    variances: list[float]
    steps: int
    adapter: dict[str, torch.Tensor]

    @property
    def sigmas(self) -> list[float]:
        """σ_i = sqrt(σ²_i), the uncertainty trace adaptive SIFT compares with 1/(α i)."""
        return [math.sqrt(max(v, 0.0)) for v in self.variances]


def _check_number(name: str, value: Any, *, integer: bool = False, low: float = 0.0) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value < low:
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} >= {low:g}, got {value!r}")


class TestTimeTuner:
    """Select from a :class:`~testtime.memory.Memory`, fine-tune, generate and score.

    Use :meth:`from_pretrained`. ``n`` sequences (gradient steps) per prompt, noise ``lam``
    (λ′), optional adaptive stopping ``alpha``, ``k`` candidates pre-selected per prompt,
    ``batch_prompts`` prompts adapted together in ``lora`` mode.
    """

    __test__ = False  # not a pytest class

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        memory: Memory,
        *,
        selector: str = "sift",
        n: int = _SELECT["n"],
        lam: float = _SELECT["lam"],
        alpha: float | None = None,
        k: int = _SELECT["k"],
        mode: str = _FINETUNE["mode"],
        settings: TrainSettings | None = None,
        lora: Mapping[str, Any] | None = None,
        max_length: int | None = None,
        batch_prompts: int = 16,
        device: str | torch.device = "cpu",
        seed: int = 0,
        autocast: bool | None = None,
        model_name: str = "the model",
    ) -> None:
        if selector not in SELECTORS:
            raise ValueError(f"unknown selector {selector!r}; use one of {sorted(SELECTORS)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
        _check_number("n", n, integer=True, low=1)
        _check_number("k", k, integer=True, low=1)
        _check_number("batch_prompts", batch_prompts, integer=True, low=1)
        _check_number("lam", lam)
        if lam <= 0:
            raise ValueError(f"lam must be > 0, got {lam!r}")
        if alpha is not None:
            _check_number("alpha", alpha)
            if alpha <= 0:
                raise ValueError(f"alpha must be > 0 or None, got {alpha!r}")
        if not isinstance(memory, Memory):
            memory = Memory.open(memory)
        memory.check_tokenizer(tokenizer, model_name)
        self.memory, self.tokenizer = memory, tokenizer
        self.selector, self.n, self.lam, self.alpha, self.k = selector, n, lam, alpha, k
        self.mode, self.seed, self.batch_prompts = mode, seed, batch_prompts
        self.context = model_context(model)
        self.max_length = min(max_length or self.context, self.context)
        if mode == "lora":
            model = wrap_lora(model, {**DEFAULT_LORA, **(lora or {})}, derive_seed(seed, "lora"))
        self.finetuner = Finetuner(
            model,
            select_trainable(model, mode),
            settings or TrainSettings.from_config(DEFAULTS),
            device=device,
            seed=seed,
            autocast=autocast,
            context=self.context,
        )
        self.model = self.finetuner.model
        self.device = self.finetuner.device
        self._cache: dict[str, Adaptation] = {}

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        memory: Memory | str | Path,
        *,
        lr: float = _FINETUNE["lr"],
        optimizer: str = _FINETUNE["optimizer"],
        embedder: str | None = None,
        device: str = "auto",
        flag: str = "model",
        **kwargs: Any,
    ) -> TestTimeTuner:
        """Load a causal LM and its tokenizer (directory or hub id) and check them against the
        memory (same tokenizer; ``embedder``, if given, must be the memory's). ``lr`` is the
        step size of ``optimizer`` (adam | adamw; the other optimizer settings are the schema's
        ``finetune.*`` defaults); the other keywords (``selector``, ``n``, ``lam``, ``alpha``,
        ``k``, ``mode``, ``lora``, ``seed``, ...) go to the constructor, which holds their
        defaults. Errors about the model name it as ``flag``; a path-like ``model`` that does
        not exist is an error, never looked up on the hub."""
        from testtime.device import resolve_device
        from testtime.lm import load_causal_lm
        from testtime.tokenizer import load_tokenizer

        if not isinstance(memory, Memory):
            memory = Memory.open(memory)
        memory.check_embedder(embedder)
        if optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be adam or adamw, got {optimizer!r}")
        _check_number("lr", lr)
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        dev = resolve_device(device)
        tokenizer = load_tokenizer(model, flag=flag)
        memory.check_tokenizer(tokenizer, f"{flag} {str(model)!r}")
        try:
            lm = load_causal_lm(model, dev, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            message = str(exc).replace("causal LM directory", flag)
            raise type(exc)(message if flag in message else f"{flag}: {message}") from exc
        settings = TrainSettings.from_config(
            {"finetune": {**_FINETUNE, "optimizer": optimizer, "lr": float(lr)}}
        )
        return cls(
            lm,
            tokenizer,
            memory,
            settings=settings,
            device=dev,
            model_name=f"{flag} {str(model)!r}",
            **kwargs,
        )

    # ---------------------------------------------------------------------------- helpers
    def _prompt_ids(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) + 1 > self.context:
            raise ValueError(
                f"prompt {prompt[:40]!r}... has {len(ids)} tokens; the model context is "
                f"{self.context} tokens (shorten the prompt)"
            )
        return ids

    def _start_id(self) -> int:
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None:
            raise ValueError("the tokenizer has neither a bos nor an eos token")
        return int(start)

    def base_fingerprint(self) -> str:
        """sha256 of the base model's weights (LoRA factors excluded): unchanged by adaptation."""
        self.finetuner.restore()
        h = hashlib.sha256()
        for name, p in self.model.named_parameters():
            if "lora_" not in name:
                h.update(name.encode())
                h.update(p.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    # -------------------------------------------------------------------------- selection
    def select(self, prompts: Sequence[str]) -> list[tuple[list[int], list[float], int]]:
        """Per prompt: selected seq_ids (all n), the variance trace ``(n + 1)`` and the steps to
        take (n, or the adaptive stop). ``random`` draws from
        :func:`testtime.seeding.selection_generator` with the prompt id
        :func:`testtime.seeding.text_prompt_id`, as the select stage does for that id."""
        for p in prompts:
            self._prompt_ids(p)
        queries = self.memory.embed(list(prompts), str(self.device))  # (P, d)
        _, ids = self.memory.search(queries, self.k)  # (P, K)
        cands = self.memory.embeddings[ids]  # (P, K, d)
        kwargs = {}
        if self.selector == "random":  # the select stage's generator, the text as prompt id
            kwargs["generator"] = [
                selection_generator(self.seed, text_prompt_id(p), self.selector) for p in prompts
            ]
        sel = SELECTORS[self.selector](
            torch.from_numpy(queries), torch.from_numpy(np.ascontiguousarray(cands)), self.n,
            lam=self.lam, **kwargs,
        )  # fmt: skip
        steps = torch.full((len(prompts),), self.n, dtype=torch.long)
        if self.alpha is not None:
            steps = adaptive_stop_steps(sel.variances, self.alpha)
        out = []
        for b in range(len(prompts)):
            idx = sel.indices[b].tolist()
            chosen = [int(ids[b, i]) for i in idx if i >= 0]
            out.append((chosen, sel.variances[b].tolist(), int(steps[b])))
        return out

    # ------------------------------------------------------------------------- adaptation
    def adapt(self, prompts: str | Sequence[str]) -> Adaptation | list[Adaptation]:
        """Select and fine-tune for one prompt (an :class:`Adaptation`) or a list (a list).

        Raises ValueError for an empty prompt, one longer than the context, or a non-finite
        training loss (name of the prompt and step; lower ``lr``).
        """
        single = isinstance(prompts, str)
        plist = [prompts] if single else list(prompts)
        todo = list(dict.fromkeys(p for p in plist if p not in self._cache))
        done: dict[str, Adaptation] = {p: self._cache[p] for p in plist if p in self._cache}
        if todo:
            selections = self.select(todo)
            if self.mode == "lora":
                for lo in range(0, len(todo), self.batch_prompts):
                    part = todo[lo : lo + self.batch_prompts]
                    done.update(self._adapt_lora(part, selections[lo : lo + len(part)]))
            else:
                for p, s in zip(todo, selections, strict=True):
                    done[p] = self._adapt_full(p, s)
        self._cache = {p: done[p] for p in plist}  # keep the last call's adaptations
        result = [done[p] for p in plist]
        return result[0] if single else result

    def _train_ids(self, seq_ids: Sequence[int]) -> list[torch.Tensor]:
        return [torch.from_numpy(self.memory.input_ids(i)[: self.max_length]) for i in seq_ids]

    def _adaptation(self, prompt, selection, adapter) -> Adaptation:
        seq_ids, variances, steps = selection
        used = seq_ids[:steps]
        texts = [self.memory.text(i) for i in used]
        return Adaptation(prompt, used, texts, variances, steps, adapter)

    def _adapt_lora(self, prompts, selections) -> dict[str, Adaptation]:
        engine = LoraEngine(self.finetuner, self.finetuner.settings)
        pairs = zip(prompts, selections, strict=True)
        jobs = [self._job(b, p, s, ()) for b, (p, s) in enumerate(pairs)]
        outcomes = drive(engine, jobs)
        failed = [(o.nan_step, b) for b, o in enumerate(outcomes) if o.nan_step is not None]
        if failed:
            step, b = min(failed)
            raise ValueError(
                f"non-finite training loss for prompt {prompts[b][:40]!r} at step {step} "
                f"(memory sequence {selections[b][0][step - 1]}); lower lr"
            )
        return {
            p: self._adaptation(p, s, {n: v.cpu() for n, v in engine.adapter(b).items()})
            for b, (p, s) in enumerate(zip(prompts, selections, strict=True))
        }

    def _job(self, pid: int, prompt: str, selection, eval_steps) -> PromptJob:
        """The fine-tuning job of one prompt: its selection's first ``steps`` sequences; the
        prompt itself as the eval text (scored at ``eval_steps``)."""
        seq_ids, _, steps = selection
        ids = [self._start_id(), *self._prompt_ids(prompt)]
        train = self._train_ids(seq_ids[:steps])
        return PromptJob(pid, train, torch.tensor(ids), len(prompt.encode()), eval_steps)

    def _adapt_full(self, prompt: str, selection) -> Adaptation:
        rows = self.finetuner.run_sequential(self._job(0, prompt, selection, (selection[2],)))
        try:
            if rows[-1].status != STATUS_OK:
                raise ValueError(f"non-finite training loss for prompt {prompt[:40]!r}; lower lr")
            params = dict(self.model.named_parameters())
            adapter = {n: params[n].detach().cpu().clone() for n in self.finetuner.trainable}
        finally:
            self.finetuner.restore()
        return self._adaptation(prompt, selection, adapter)

    @contextlib.contextmanager
    def _weights(self, adaptations: Sequence[Adaptation] | None) -> Iterator[None]:
        """Within the block the model computes batch row i with ``adaptations[i]``'s weights
        (None: the base model)."""
        if adaptations is None:
            self.finetuner.restore()
            ctx = self.model.disable_adapter() if self.mode == "lora" else contextlib.nullcontext()
            with ctx:
                yield
            return
        if self.mode == "lora":
            stacked = StackedLora(self.model, self.finetuner.base, len(adaptations))
            with torch.no_grad():
                for b, a in enumerate(adaptations):
                    for name, value in a.adapter.items():
                        stacked.params[name][b] = value.to(self.device)
            with stacked.applied():
                yield
            return
        if len(adaptations) != 1:
            raise ValueError(f"mode {self.mode!r} runs one adapted prompt at a time")
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in adaptations[0].adapter.items():
                params[name].copy_(value.to(self.device))
        try:
            yield
        finally:
            self.finetuner.restore()

    # ------------------------------------------------------------------------- generation
    def generate(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int = 128,
        *,
        adapted: bool = True,
        adaptations: Adaptation | Sequence[Adaptation] | None = None,
        **generate_kwargs: Any,
    ) -> str | list[str]:
        """Continuation of each prompt (greedy unless ``generate_kwargs`` say otherwise) by the
        adapted model (``adapted=False``: the base model). A list is adapted and generated in
        batches of ``batch_prompts`` (``lora``), one at a time otherwise. ``adaptations`` (from
        :meth:`adapt`, one per prompt) are used instead of adapting again."""
        single = isinstance(prompts, str)
        plist = [prompts] if single else list(prompts)
        _check_number("max_new_tokens", max_new_tokens, integer=True, low=1)
        longest = max(len(self._prompt_ids(p)) for p in plist)
        if longest + max_new_tokens > self.context:
            raise ValueError(
                f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the "
                f"model context of {self.context} tokens; lower max_new_tokens"
            )
        if not adapted:
            adaptations = None
        elif adaptations is None:
            adaptations = self.adapt(plist)
        elif isinstance(adaptations, Adaptation):
            adaptations = [adaptations]
        if adaptations is not None and len(adaptations) != len(plist):
            raise ValueError(f"{len(adaptations)} adaptations given for {len(plist)} prompts")
        step = self.batch_prompts if (self.mode == "lora" or not adapted) else 1
        out: list[str] = []
        for lo in range(0, len(plist), step):
            part = plist[lo : lo + step]
            weights = self._weights(None if adaptations is None else adaptations[lo : lo + step])
            with weights, torch.no_grad():
                out += self._generate_batch(part, max_new_tokens, generate_kwargs)
        return out[0] if single else out

    def _generate_batch(self, prompts: list[str], max_new_tokens: int, kwargs) -> list[str]:
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tok.padding_side = side
        enc = enc.to(self.device)
        self.model.eval()
        kwargs = {"do_sample": False, "pad_token_id": tok.pad_token_id, **kwargs}
        out = self.model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            max_new_tokens=max_new_tokens,
            **kwargs,
        )
        return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    # ---------------------------------------------------------------------------- scoring
    def score(self, prompt: str, text: str | None = None, *, adapted: bool = True) -> float:
        """Bits per byte of ``text`` given ``prompt`` as context (only text tokens are scored;
        beyond the context, windows as in :mod:`testtime.bpb`). Without ``text``: of the prompt
        itself, the workflow's ``same`` protocol (the query is the scored text)."""
        if text is None:
            ids = self._prompt_ids(prompt)
            seq, unscored, n_bytes = torch.tensor([self._start_id(), *ids]), 0, prompt
        else:
            if not isinstance(text, str) or not text:
                raise ValueError("text to score is empty: bits per byte is undefined")
            p_ids = self._prompt_ids(prompt)
            t_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            seq, unscored, n_bytes = (
                torch.tensor([self._start_id(), *p_ids, *t_ids]),
                len(p_ids),
                text,
            )
        # prompt tokens are context only: the split protocol's scoring (testtime.bpb)
        inputs, targets = make_windows([seq], self.context, unscored=[unscored])
        adaptation = [self.adapt(prompt)] if adapted else None
        self.model.eval()
        with self._weights(adaptation), torch.no_grad():
            nll = score_windows(lambda x: self.model(x.to(self.device)).logits, inputs, targets)
        return bits_per_byte(float(nll[0]), len(n_bytes.encode("utf-8")))
