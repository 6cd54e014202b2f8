"""Batched per-prompt LoRA against independent references (tiny GPT-2, CPU).

Checks: the per-row loss equals ``lm_loss`` row by row; B prompts fine-tuned together give the
rows of the sequential ``peft`` loop (``Finetuner.run_sequential``) and of a plain peft +
``torch.optim`` loop, for Adam and AdamW with clipping, with prompts of different lengths and
step counts (early stoppers drop out); a prompt whose loss turns non-finite stops alone; the
frozen base weights never change; ``Finetuner.run`` takes this path for LoRA.

Run: .venv/bin/pytest tests/unit/test_lora_batched.py
"""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch

from tests.unit.tiny_lm import tiny_gpt2
from testtime.adapters import select_trainable, wrap_lora
from testtime.finetune import STATUS_NAN, Finetuner, PromptJob, TrainSettings
from testtime.finetune.lora import LoraEngine, row_losses
from testtime.lm import lm_loss

V = 64
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["c_attn", "c_fc"]}


def _job(pid: int, n_steps: int, seed: int, eval_steps=None, poison_step: int | None = None):
    gen = torch.Generator().manual_seed(seed)
    train = []
    for _ in range(n_steps):
        length = int(torch.randint(5, 16, (1,), generator=gen))
        train.append(torch.randint(1, V - 1, (length,), generator=gen))
    if poison_step is not None:
        train[poison_step - 1][2] = V - 1  # token with an infinite embedding: loss is NaN
    eval_ids = torch.cat(
        [torch.zeros(1, dtype=torch.long), torch.randint(1, V - 1, (30,), generator=gen)]
    )
    steps = eval_steps if eval_steps is not None else tuple(range(n_steps + 1))
    return PromptJob(pid, train, eval_ids, 40, steps)


def _lora_tuner(settings: TrainSettings, poison: bool = False) -> Finetuner:
    model = tiny_gpt2(V, n_positions=16, tied=not poison)  # untied: only the input is inf
    if poison:
        with torch.no_grad():
            model.transformer.wte.weight[V - 1] = float("inf")
    model = wrap_lora(model, LORA, seed=3)
    return Finetuner(model, select_trainable(model, "lora"), settings, seed=0)


def _base_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for n, p in model.named_parameters():
        if "lora_" not in n:
            h.update(n.encode() + p.detach().numpy().tobytes())
    return h.hexdigest()


def _plain_peft(settings: TrainSettings, job: PromptJob) -> list[float]:
    """Independent reference: a fresh peft model per prompt, torch.optim, loss via labels=."""
    model = wrap_lora(tiny_gpt2(V, n_positions=16), LORA, seed=3)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    cls = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    opt = cls(params, lr=settings.lr, eps=settings.eps, weight_decay=settings.weight_decay)
    out = []
    for seq in job.train_ids:
        model.train()
        loss = model(seq[None], labels=seq[None]).loss
        opt.zero_grad()
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        opt.step()
    model.eval()
    with torch.no_grad():
        x = job.eval_ids
        logp = torch.log_softmax(model(x[:-1][:16][None]).logits[0], -1)
        nll = -logp[torch.arange(len(x[1:17])), x[1:17]].sum().item()
        logp = torch.log_softmax(model(x[16:-1][None]).logits[0], -1)
        nll -= logp[torch.arange(len(x[17:])), x[17:]].sum().item()
    out.append(nll)
    return out


def test_row_losses_equal_lm_loss_per_row():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, V, generator=gen)
    ids = torch.randint(0, V, (3, 7), generator=gen)
    lengths = [7, 4, 2]
    valid = torch.arange(7)[None] < torch.tensor(lengths)[:, None]
    got = row_losses(logits, ids, valid)
    for b, n in enumerate(lengths):
        full = torch.ones(1, n, dtype=torch.bool)
        assert torch.allclose(got[b], lm_loss(logits[b : b + 1, :n], ids[b : b + 1, :n], full))


@pytest.mark.parametrize(
    "settings",
    [
        TrainSettings(lr=3e-3),
        TrainSettings(optimizer="adamw", lr=1e-2, weight_decay=0.1, grad_clip=0.05),
    ],
)
def test_batched_equals_sequential_peft_loop(settings):
    jobs = [_job(0, 4, 1), _job(1, 2, 2), _job(2, 3, 3, eval_steps=(1, 3))]
    seq_tuner = _lora_tuner(settings)
    expected = [seq_tuner.run_sequential(j) for j in jobs]
    tuner = _lora_tuner(settings)
    before = _base_hash(tuner.model)
    got = tuner.run_lora(jobs)
    assert _base_hash(tuner.model) == before
    for exp_rows, got_rows in zip(expected, got, strict=True):
        assert [r.steps for r in got_rows] == [r.steps for r in exp_rows]
        for e, g in zip(exp_rows, got_rows, strict=True):
            assert g.status == e.status == "ok"
            assert g.nll == pytest.approx(e.nll, rel=1e-5, abs=1e-5)
    # the last row of each job also matches a plain peft + torch.optim loop
    for job, got_rows in zip(jobs, got, strict=True):
        assert got_rows[-1].nll == pytest.approx(_plain_peft(settings, job)[-1], rel=1e-4)
    # training moved the adapters: the final scores differ from the base scores
    assert all(rows[-1].nll != rows[0].nll for rows in got if rows[0].steps == 0)


def test_finetuner_run_dispatches_lora_to_batched_path():
    settings = TrainSettings(lr=3e-3)
    jobs = [_job(i, 2, 10 + i, eval_steps=(2,)) for i in range(3)]
    expected = [r for j in jobs for r in _lora_tuner(settings).run_sequential(j)]
    tuner = _lora_tuner(settings)
    got = [r for rows in tuner.run(jobs, batch_prompts=2) for r in rows]
    assert [(r.prompt_id, r.steps) for r in got] == [(r.prompt_id, r.steps) for r in expected]
    assert [r.nll for r in got] == pytest.approx([r.nll for r in expected], rel=1e-5)


def test_non_finite_loss_stops_only_that_prompt():
    settings = TrainSettings(lr=3e-3)
    jobs = [_job(0, 3, 1), _job(1, 3, 2, poison_step=2), _job(2, 3, 3)]
    expected = [_lora_tuner(settings, poison=True).run_sequential(j) for j in jobs]
    got = _lora_tuner(settings, poison=True).run_lora(jobs)
    assert [r.status for r in got[1]] == ["ok", "ok", STATUS_NAN, STATUS_NAN]
    assert [r.status for r in expected[1]] == [r.status for r in got[1]]
    for b in (0, 2):
        assert [r.nll for r in got[b]] == pytest.approx([r.nll for r in expected[b]], rel=1e-5)


def test_engine_rejects_a_model_without_lora():
    model = tiny_gpt2(V, n_positions=16)
    tuner = Finetuner(model, select_trainable(model, "full"), TrainSettings())
    with pytest.raises(ValueError, match="LoRA"):
        LoraEngine(tuner, tuner.settings)


def test_adapter_slots_are_independent_copies():
    tuner = _lora_tuner(TrainSettings(lr=1e-2))
    engine = LoraEngine(tuner, tuner.settings)
    engine.start([_job(0, 1, 1), _job(1, 1, 2)])
    seq = torch.arange(1, 9)
    engine.step([seq, None])
    a0, a1 = engine.adapter(0), engine.adapter(1)
    init = {n: v for n, v in copy.deepcopy(tuner.base).items()}
    assert all(torch.equal(a1[n], init[n]) for n in init)  # slot 1 took no step
    assert any(not torch.equal(a0[n], init[n]) for n in init)


def test_bf16_autocast_batched_close_to_sequential():
    settings = TrainSettings(lr=3e-3)
    jobs = [_job(0, 3, 1, eval_steps=(3,)), _job(1, 2, 2, eval_steps=(2,))]
    seq = _lora_tuner(settings)
    seq.autocast = True
    expected = [seq.run_sequential(j)[-1].nll for j in jobs]
    tuner = _lora_tuner(settings)
    tuner.autocast = True
    got = [rows[-1].nll for rows in tuner.run_lora(jobs)]
    assert got == pytest.approx(expected, rel=2e-2)


def test_finetune_stage_lora_batch_prompts(tmp_path):
    """The workflow's finetune stage (run_finetune) with finetune.mode lora: batch_prompts 3
    takes the batched path and gives the rows of batch_prompts 1."""
    import numpy as np
    import pandas as pd

    from tests.unit.tiny_lm import TEXTS, tiny_tokenizer
    from testtime.config import validate_config
    from testtime.finetune.stage import read_finetune_inputs, run_finetune

    tok = tiny_tokenizer()
    tiny_gpt2(vocab=len(tok), n_positions=32).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "seq_id": np.arange(8),
            "input_ids": [rng.integers(1, len(tok), 20 + 3 * i).astype(np.int32) for i in range(8)],
        }
    ).to_parquet(tmp_path / "memory.parquet")
    pd.DataFrame(
        {
            "prompt_id": np.arange(3),
            "domain": ["Github"] * 3,
            "prompt_text": ["p"] * 3,
            "eval_text": [TEXTS[i] * 2 for i in range(3)],
        }
    ).to_parquet(tmp_path / "prompts.parquet")
    rows = [(p, 0, -1, 1.0) for p in range(3)]
    # select.n steps each: the stage checks the selection against select.n
    rows += [(p, s, int(rng.integers(0, 8)), 0.5**s) for p in range(3) for s in range(1, 5)]
    pd.DataFrame(rows, columns=["prompt_id", "step", "memory_id", "variance"]).to_parquet(
        tmp_path / "sift.parquet"
    )
    tables = []
    for batch in (1, 3):
        cfg = validate_config(
            {
                "device": "cpu",
                "select": {"n": 4, "k": 8, "methods": ["sift"], "adaptive_alphas": []},
                "finetune": {"mode": "lora", "lr": 3e-3, "eval_at": [], "batch_prompts": batch},
            }
        )
        tables.append(
            run_finetune(
                cfg,
                read_finetune_inputs(
                    cfg,
                    method="sift",
                    prompts_path=tmp_path / "prompts.parquet",
                    memory_path=tmp_path / "memory.parquet",
                    selection_path=tmp_path / "sift.parquet",
                ),
                model_dir=tmp_path / "model",
            )
        )
    one, batched = tables
    assert (
        one[["prompt_id", "steps"]].values.tolist()
        == batched[["prompt_id", "steps"]].values.tolist()
    )
    assert batched["bpb"].tolist() == pytest.approx(one["bpb"].tolist(), rel=1e-5)
    assert len(set(one["bpb"].round(6))) > 3  # steps change the score
