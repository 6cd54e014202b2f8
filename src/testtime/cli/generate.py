"""`testtime generate`: fine-tune on selected memory sequences at test time, then answer.

Prints the bits per byte before and after adaptation (of the prompt itself, the workflow's
``same`` protocol, or of ``--score TEXT`` given the prompt), the base model's answer, the
adapted model's answer, the selected sequences (memory id, source document and part, repeats
marked) and the σ_n trace; ``--json`` prints one JSON object instead. Defaults are the workflow
config schema's (shown by ``--help``). Example::

    testtime generate --model path/to/model --memory mem/ --prompt "def fib(n):" \\
        --n 20 --lr 1e-3 --alpha 0.2 --max-new-tokens 64
"""

from __future__ import annotations

import argparse

from testtime.cli._common import (
    DefaultsHelpFormatter,
    add_verbose_argument,
    device,
    schema_option,
)

HELP = "test-time fine-tune on your prompt with SIFT-selected memory and generate"
SELECTORS = ("sift", "nn", "nn_f", "us", "random")  # testtime.selection.SELECTORS
MODES = ("full", "lora", "head")  # testtime.adapters.MODES

# options passed on as TestTimeTuner.from_pretrained keywords of the same name
TUNER_OPTIONS = ("selector", "n", "lam", "alpha", "k", "mode", "lr", "optimizer", "embedder")
TUNER_OPTIONS += ("device", "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = DefaultsHelpFormatter
    parser.epilog = "Defaults are the workflow config schema's (select.*, finetune.*)."
    parser.add_argument("--model", required=True, help="causal LM: directory or hub id")
    parser.add_argument("--memory", required=True, help="memory directory (testtime memory build)")
    parser.add_argument("--prompt", required=True, help="the prompt")
    parser.add_argument(
        "--score",
        default=None,
        metavar="TEXT",
        help="score this continuation of the prompt before/after (default: the prompt itself)",
    )
    parser.add_argument("--selector", default="sift", choices=SELECTORS, help="data selection")
    schema_option(parser, "--n", "select.n", "sequences selected = gradient steps", type=int)
    schema_option(parser, "--lam", "select.lam", "SIFT noise lambda'", type=float)
    parser.add_argument("--alpha", type=float, default=None, help="adaptive SIFT stop (optional)")
    schema_option(parser, "--k", "select.k", "candidates pre-selected by Faiss", type=int)
    schema_option(
        parser,
        "--mode",
        "finetune.mode",
        "weights trained: all, LoRA adapters, or the head",
        choices=MODES,
    )
    schema_option(parser, "--lr", "finetune.lr", "step size", type=float)
    schema_option(
        parser, "--optimizer", "finetune.optimizer", "optimizer", choices=("adam", "adamw")
    )
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate")
    parser.add_argument("--embedder", default=None, help="must equal the memory's embedder")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed (LoRA init, random selector)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_verbose_argument(parser)


def run(args: argparse.Namespace) -> None:
    import json

    from testtime.cli._common import quiet_libraries, resolve_device_flag

    quiet_libraries(args.verbose)
    from testtime.tuner import TestTimeTuner

    options = {k: getattr(args, k) for k in TUNER_OPTIONS}
    options["device"] = str(resolve_device_flag(args.device))
    tuner = TestTimeTuner.from_pretrained(args.model, args.memory, flag="--model", **options)
    base = tuner.generate(args.prompt, args.max_new_tokens, adapted=False)
    bpb_before = tuner.score(args.prompt, args.score, adapted=False)
    result = tuner.adapt(args.prompt)  # fine-tuned once: reported and generated with
    adapted = tuner.generate(args.prompt, args.max_new_tokens, adaptations=result)
    bpb_after = tuner.score(args.prompt, args.score)
    selected = []
    seen: set[int] = set()
    for step, (seq_id, text) in enumerate(zip(result.seq_ids, result.texts, strict=True), 1):
        selected.append(
            {
                "step": step,
                "seq_id": seq_id,
                "repeat": seq_id in seen,
                "doc_id": int(tuner.memory.sequences["doc_id"].iat[seq_id]),
                "source": tuner.memory.source(seq_id),
                "text": text,
            }
        )
        seen.add(seq_id)
    scored = "the prompt" if args.score is None else "--score text"
    settings = ("selector", "n", "lam", "alpha", "k", "mode", "lr", "optimizer")
    if args.json:
        record = {
            "prompt": args.prompt,
            "base": base,
            "adapted": adapted,
            "bpb": {"scored": scored, "base": bpb_before, "adapted": bpb_after},
            "steps": result.steps,
            "selected": selected,
            "sigma": result.sigmas,
            "memory": tuner.memory.manifest["fingerprint"],
            "settings": {k: getattr(args, k) for k in settings},
        }
        print(json.dumps(record, indent=2, allow_nan=False))
        return
    same = " (same text)" if adapted == base else ""
    print(f"prompt: {args.prompt}\n")
    print(f"bits per byte of {scored}: base {bpb_before:.4f} -> adapted {bpb_after:.4f} "
          f"({bpb_after - bpb_before:+.4f})\n")  # fmt: skip
    print(f"base model:\n{args.prompt}{base}\n")
    print(f"adapted ({result.steps} steps, {args.mode}, lr {args.lr:g}){same}:\n"
          f"{args.prompt}{adapted}\n")  # fmt: skip
    print(f"selected by {args.selector} (n={args.n}, lambda'={args.lam:g}):")
    for s in selected:
        mark = " (repeat)" if s["repeat"] else ""
        print(f"  {s['step']:>3}  #{s['seq_id']:<7} {s['source']}{mark}")
    trace = " ".join(f"{x:.3f}" for x in result.sigmas)
    print(f"\nsigma_n (n = 0..{len(result.sigmas) - 1}): {trace}")
