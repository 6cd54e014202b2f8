"""Test-time fine-tuning loop: equals a plain torch/HF loop, resets per prompt, batched path
agrees with the one-prompt loop, modes train only their parameters, NaN losses are contained.

Run: .venv/bin/pytest tests/unit/test_finetune.py
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tests.unit.tiny_lm import tiny_gpt2
from testtime.adapters import select_trainable, wrap_lora
from testtime.finetune import Finetuner, PromptJob, TrainSettings
from testtime.finetune.optim import StackedAdam

V = 64


def _job(pid: int, n_steps: int, seed: int, eval_steps=None, lengths=(5, 20)) -> PromptJob:
    gen = torch.Generator().manual_seed(seed)
    train = [
        torch.randint(1, V, (int(torch.randint(*lengths, (1,), generator=gen)),), generator=gen)
        for _ in range(n_steps)
    ]
    eval_ids = torch.cat(
        [torch.zeros(1, dtype=torch.long), torch.randint(1, V, (40,), generator=gen)]
    )
    steps = eval_steps if eval_steps is not None else tuple(range(n_steps + 1))
    return PromptJob(pid, train, eval_ids, 50, steps)


def _reference_nll(model, eval_ids: torch.Tensor, context: int) -> float:
    """Plain scoring: disjoint windows, log-softmax of the HF model's logits."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for lo in range(0, len(eval_ids) - 1, context):
            x = eval_ids[lo : lo + context]
            y = eval_ids[lo + 1 : lo + 1 + context]
            logp = torch.log_softmax(model(x[: len(y)][None]).logits[0], -1)
            total -= logp[torch.arange(len(y)), y].sum().item()
    return total


def _plain_loop(model, job: PromptJob, settings: TrainSettings, context: int) -> dict[int, float]:
    """The naive Hugging Face recipe: copy the model, AdamW/Adam, loss via labels=."""
    m = copy.deepcopy(model)
    cls = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    opt = cls(m.parameters(), lr=settings.lr, eps=settings.eps, weight_decay=settings.weight_decay)
    out = {0: _reference_nll(m, job.eval_ids, context)}
    for t, seq in enumerate(job.train_ids, 1):
        m.train()
        loss = m(seq[None], labels=seq[None]).loss
        opt.zero_grad()
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(m.parameters(), settings.grad_clip)
        opt.step()
        out[t] = _reference_nll(m, job.eval_ids, context)
    return out


@pytest.mark.parametrize(
    "settings",
    [
        TrainSettings(lr=1e-3),
        TrainSettings(optimizer="adamw", lr=3e-3, weight_decay=0.1, grad_clip=0.5),
    ],
)
def test_sequential_loop_equals_plain_hf_loop(settings):
    model = tiny_gpt2(V, n_positions=16)
    job = _job(0, 3, seed=1, lengths=(5, 16))
    expected = _plain_loop(model, job, settings, context=16)
    base_state = copy.deepcopy(model.state_dict())
    tuner = Finetuner(model, select_trainable(model, "full"), settings)
    rows = tuner.run_sequential(job)
    assert [r.steps for r in rows] == [0, 1, 2, 3]
    for r in rows:
        assert r.status == "ok"
        assert r.nll == pytest.approx(expected[r.steps], rel=1e-5)
        assert r.bpb == pytest.approx(expected[r.steps] / (math.log(2) * 50), rel=1e-5)
    assert rows[3].nll != pytest.approx(rows[0].nll, rel=1e-6)  # training did something
    # after one plain step, the parameters also agree one by one
    tuner.run_sequential(_job(0, 1, seed=1, eval_steps=(1,), lengths=(5, 16)))
    plain = tiny_gpt2(V, n_positions=16)
    plain.load_state_dict(base_state)
    cls = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    opt = cls(
        plain.parameters(), lr=settings.lr, eps=settings.eps, weight_decay=settings.weight_decay
    )
    seq = job.train_ids[0][None]
    plain.train()
    plain(seq, labels=seq).loss.backward()
    if settings.grad_clip:
        torch.nn.utils.clip_grad_norm_(plain.parameters(), settings.grad_clip)
    opt.step()
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_parameters_reset_between_prompts():
    model = tiny_gpt2(V)
    tuner = Finetuner(model, select_trainable(model, "full"), TrainSettings(lr=1e-2))
    a, b = _job(0, 4, seed=2), _job(1, 3, seed=3)
    alone = tuner.run_sequential(b)
    tuner.run_sequential(a)
    after = tuner.run_sequential(b)
    assert [r.nll for r in after] == pytest.approx([r.nll for r in alone], rel=1e-6)
    # and in the batched path, b's rows do not depend on its batch neighbour
    pair = tuner.run_batched([a, b])
    assert [r.nll for r in pair[1]] == pytest.approx([r.nll for r in alone], rel=1e-4)


def mode_model(mode: str):
    """The tiny GPT-2 for ``mode``; for lora wrapped by peft, with B moved off zero (peft starts
    it at zero) so that the first step's gradient reaches A too."""
    model = tiny_gpt2(V)
    if mode == "lora":
        model = wrap_lora(
            model, {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["c_attn"]}, seed=0
        )
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
    return model


def three_jobs() -> list[PromptJob]:
    """Three prompts with different step counts and eval steps (batched-path tests)."""
    return [_job(0, 2, 4, (0, 2)), _job(1, 4, 5, (1, 3, 4)), _job(2, 3, 6)]


@pytest.mark.parametrize("mode", ["full", "head", "lora"])
def test_batched_path_equals_one_prompt_loop(mode):
    model = mode_model(mode)
    settings = TrainSettings(optimizer="adamw", lr=5e-3, weight_decay=0.01, grad_clip=1.0)
    tuner = Finetuner(model, select_trainable(model, mode), settings)
    jobs = three_jobs()
    sequential = [tuner.run_sequential(j) for j in jobs]
    batched = tuner.run_batched(jobs)
    for s_rows, b_rows in zip(sequential, batched, strict=True):
        assert [r.steps for r in b_rows] == [r.steps for r in s_rows]
        assert [r.nll for r in b_rows] == pytest.approx([r.nll for r in s_rows], rel=1e-4)


def _changed(model, before: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def test_head_mode_changes_only_last_block_and_final_norm():
    model = tiny_gpt2(V, tied=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tuner = Finetuner(model, select_trainable(model, "head"), TrainSettings(lr=1e-2))
    tuner.run_sequential(_job(0, 2, seed=7, eval_steps=(2,)))
    changed = _changed(model, before)
    allowed = {n for n in before if n.startswith(("transformer.h.1.", "transformer.ln_f."))}
    allowed.add("lm_head.weight")  # untied: the head is trained
    assert changed and changed <= allowed
    assert "lm_head.weight" in changed and "transformer.h.1.mlp.c_fc.weight" in changed


def test_head_mode_keeps_tied_embeddings_frozen():
    model = tiny_gpt2(V, tied=True)
    names = select_trainable(model, "head")
    assert "transformer.wte.weight" not in names
    assert all(n.startswith(("transformer.h.1.", "transformer.ln_f.")) for n in names)


def test_lora_mode_changes_only_adapters():
    model = wrap_lora(
        tiny_gpt2(V), {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": None}, seed=0
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tuner = Finetuner(model, select_trainable(model, "lora"), TrainSettings(lr=1e-2))
    rows = tuner.run_sequential(_job(0, 3, seed=8, eval_steps=(0, 3)))
    changed = _changed(model, before)
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)
    assert rows[1].nll != pytest.approx(rows[0].nll, rel=1e-7)


@pytest.mark.parametrize("batched", [False, True])
def test_nan_loss_stops_only_that_prompt(batched):
    model = tiny_gpt2(V, tied=False)
    with torch.no_grad():
        model.transformer.wte.weight[7] = float("nan")  # token 7 poisons any sequence holding it
    good = _job(0, 3, seed=9)
    bad = _job(1, 3, seed=10)
    for job in (good, bad):
        for seq in job.train_ids:
            seq[seq == 7] = 8
        job.eval_ids[job.eval_ids == 7] = 8
    bad.train_ids[1][0] = 7
    tuner = Finetuner(model, select_trainable(model, "full"), TrainSettings(lr=1e-3))
    rows = (
        tuner.run_batched([good, bad])
        if batched
        else [tuner.run_sequential(j) for j in (good, bad)]
    )
    assert [r.status for r in rows[0]] == ["ok"] * 4
    assert [(r.steps, r.status) for r in rows[1]] == [
        (0, "ok"),
        (1, "ok"),
        (2, "nan_loss"),
        (3, "nan_loss"),
    ]
    assert math.isnan(rows[1][2].bpb) and math.isfinite(rows[1][1].bpb)


def test_score_base_equals_reference():
    model = tiny_gpt2(V, n_positions=16)
    jobs = [_job(0, 1, 11), _job(1, 1, 12)]
    tuner = Finetuner(model, select_trainable(model, "full"), TrainSettings())
    rows = tuner.score_base(jobs)
    for j, r in zip(jobs, rows, strict=True):
        assert r.steps == 0
        assert r.nll == pytest.approx(_reference_nll(model, j.eval_ids, 16), rel=1e-5)


def test_job_rejects_eval_steps_beyond_selection():
    with pytest.raises(ValueError, match="eval steps"):
        _job(0, 2, 1, eval_steps=(3,))


def _reference_nll_given_context(model, eval_ids: torch.Tensor, n_context: int) -> float:
    """One forward over bos + context + text; sum -log p of the text tokens only."""
    model.eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(eval_ids[:-1][None]).logits[0], -1)
    targets = eval_ids[1:]
    scored = torch.arange(n_context, len(targets))
    return -logp[scored, targets[scored]].sum().item()


@pytest.mark.parametrize("batched", [False, True])
def test_split_protocol_scores_text_given_context(batched):
    model = tiny_gpt2(V, n_positions=48)
    jobs = []
    for pid, n_context in ((0, 12), (1, 25)):
        job = _job(pid, 2, 30 + pid, eval_steps=(0, 2))
        job.n_context = n_context
        jobs.append(job)
    settings = TrainSettings(lr=1e-3)
    base_model = copy.deepcopy(model)  # the sequential path trains `model` in place
    tuner = Finetuner(model, select_trainable(model, "full"), settings)
    rows = list(tuner.run(jobs, batch_prompts=2 if batched else 1))
    model = base_model
    rows = [r for group in rows for r in (group if isinstance(group, list) else [group])]
    for job in jobs:
        base = next(r for r in rows if r.prompt_id == job.prompt_id and r.steps == 0)
        expected = _reference_nll_given_context(model, job.eval_ids, job.n_context)
        assert base.nll == pytest.approx(expected, rel=1e-5)
        # the same tokens scored without the context give another number
        assert base.nll != pytest.approx(_reference_nll(model, job.eval_ids, 48), rel=1e-3)
        trained = copy.deepcopy(model)
        opt = torch.optim.Adam(trained.parameters(), lr=settings.lr, eps=settings.eps)
        for seq in job.train_ids:
            trained.train()
            loss = trained(seq[None], labels=seq[None]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        final = next(r for r in rows if r.prompt_id == job.prompt_id and r.steps == 2)
        expected = _reference_nll_given_context(trained, job.eval_ids, job.n_context)
        assert final.nll == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "settings",
    [
        TrainSettings(lr=1e-2, weight_decay=0.1),
        TrainSettings(optimizer="adamw", lr=1e-2, weight_decay=0.1, grad_clip=0.5),
    ],
)
def test_stacked_adam_update_equals_per_prompt_optimizer(settings):
    """The batched path's fused Adam on stacked (B, ...) tensors: row b equals torch.optim on
    prompt b alone, also for non-contiguous gradients (vmap returns such; the fused kernel
    reads raw memory) and for masked rows, which must not move even with NaN gradients.
    Bit for bit, it is the fused functional kernel on the stacked tensors (what the batched
    path ran before it used the torch.optim class)."""
    gen = torch.Generator().manual_seed(0)
    n_b, steps = 3, 3
    base = {"w": torch.randn(4, 5, generator=gen), "b": torch.randn(5, generator=gen)}
    stacked = {n: v.unsqueeze(0).repeat(n_b, *([1] * v.dim())) for n, v in base.items()}
    adam = StackedAdam(stacked, settings)
    functional = {n: v.clone() for n, v in stacked.items()}
    moments = [{n: torch.zeros_like(v) for n, v in stacked.items()} for _ in range(2)]
    state_steps = {n: torch.zeros(()) for n in stacked}
    refs = [{n: v.clone() for n, v in base.items()} for _ in range(n_b)]
    cls = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    opts = [
        cls(r.values(), lr=settings.lr, weight_decay=settings.weight_decay, eps=settings.eps)
        for r in refs
    ]
    for r in refs:
        for v in r.values():
            v.requires_grad_(True)
    mask = torch.tensor([True, False, True])
    for _ in range(steps):
        # non-contiguous: transposed storage
        grads = {
            "w": torch.randn(n_b, 5, 4, generator=gen).transpose(1, 2),
            "b": torch.randn(n_b, 5, generator=gen),
        }
        assert not grads["w"].is_contiguous()
        grads["w"][1] = float("nan")  # the masked prompt's gradient is NaN
        for b in range(n_b):
            if not mask[b]:
                continue
            for n, v in refs[b].items():
                v.grad = grads[n][b].clone()
            if settings.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(list(refs[b].values()), settings.grad_clip)
            opts[b].step()
        adam.step(grads, mask)
        _functional_adam(functional, grads, moments, state_steps, mask, settings)
    for n in base:
        torch.testing.assert_close(stacked[n][1], base[n], rtol=0, atol=0, msg=n)
        torch.testing.assert_close(stacked[n], functional[n], rtol=0, atol=0, msg=n)
        for b in (0, 2):
            torch.testing.assert_close(stacked[n][b], refs[b][n].detach(), msg=f"{n}[{b}]")


def _functional_adam(params, grads, moments, state_steps, mask, s: TrainSettings) -> None:
    """Reference: clip per row, then torch's fused functional Adam/AdamW on the rows in
    ``mask`` only (the rows of the stacked tensors and moments are independent)."""
    from torch.optim.adam import adam

    rows = mask.nonzero().squeeze(1)
    if s.grad_clip is not None:
        sq = sum(g.float().pow(2).flatten(1).sum(1) for g in grads.values())
        coef = (s.grad_clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        grads = {n: g * coef.view(-1, *([1] * (g.dim() - 1))) for n, g in grads.items()}
    names = list(params)
    picked = [[store[n][rows].clone() for n in names] for store in (params, *moments)]
    adam(
        picked[0],
        [grads[n][rows].contiguous() for n in names],
        picked[1],
        picked[2],
        [],
        [state_steps[n] for n in names],
        fused=True,
        amsgrad=False,
        beta1=s.betas[0],
        beta2=s.betas[1],
        lr=s.lr,
        weight_decay=s.weight_decay,
        eps=s.eps,
        maximize=False,
        decoupled_weight_decay=s.optimizer == "adamw",
    )
    for store, values in zip((params, *moments), picked, strict=True):
        for n, v in zip(names, values, strict=True):
            store[n][rows] = v


def test_batched_path_runs_models_with_a_pad_token():
    """A config naming a pad token (the workflow's tokenizer sets one) made Hugging Face test
    ``pad_id in input_ids`` inside vmap, which raised; now the batched path equals the one-prompt
    loop, and the config is left as it was."""
    model = tiny_gpt2(V)
    model.config.pad_token_id = 0  # = bos here, and the id _pad_step pads with
    tuner = Finetuner(model, select_trainable(model, "full"), TrainSettings(lr=5e-3))
    jobs = [_job(0, 2, 4, (0, 2)), _job(1, 3, 5)]
    sequential = [tuner.run_sequential(j) for j in jobs]
    batched = tuner.run_batched(jobs)
    assert model.config.pad_token_id == 0
    for s_rows, b_rows in zip(sequential, batched, strict=True):
        assert [r.nll for r in b_rows] == pytest.approx([r.nll for r in s_rows], rel=1e-4)
