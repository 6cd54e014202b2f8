"""`testtime generate`: fine-tune on selected memory sequences at test time, then answer.

Prints the base model's answer, the adapted model's answer, the selected sequences (id, first
line, repeats marked) and the σ_n trace; ``--json`` prints one JSON object instead. Example::

    testtime generate --model path/to/model --memory mem/ --prompt "def fib(n):" \\
        --n 20 --lam 0.1 --alpha 0.2 --max-new-tokens 64
"""

from __future__ import annotations

import argparse

HELP = "test-time fine-tune on your prompt with SIFT-selected memory and generate"

# options passed on as TestTimeTuner.from_pretrained keywords of the same name
TUNER_OPTIONS = ("selector", "n", "lam", "alpha", "k", "mode", "lr", "embedder", "device", "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="causal LM: directory or hub id")
    parser.add_argument("--memory", required=True, help="memory directory (testtime memory build)")
    parser.add_argument("--prompt", required=True, help="the prompt")
    parser.add_argument("--selector", default="sift", help="sift, nn, nn_f, us or random")
    parser.add_argument("--n", type=int, default=20, help="sequences selected = gradient steps")
    parser.add_argument("--lam", type=float, default=0.1, help="SIFT noise lambda'")
    parser.add_argument("--alpha", type=float, default=None, help="adaptive SIFT stop (optional)")
    parser.add_argument("--k", type=int, default=200, help="candidates pre-selected (Faiss)")
    parser.add_argument("--mode", default="lora", help="lora, full or head")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam step size")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate")
    parser.add_argument("--embedder", default=None, help="must equal the memory's embedder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--seed", type=int, default=0, help="seed (LoRA init, random selector)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _first_line(text: str, width: int = 72) -> str:
    line = next((s for s in text.splitlines() if s.strip()), "").strip()
    return line if len(line) <= width else line[: width - 3] + "..."


def run(args: argparse.Namespace) -> None:
    import json

    from testtime.tuner import TestTimeTuner

    tuner = TestTimeTuner.from_pretrained(
        args.model, args.memory, **{k: getattr(args, k) for k in TUNER_OPTIONS}
    )
    base = tuner.generate(args.prompt, args.max_new_tokens, adapted=False)
    result = tuner.adapt(args.prompt)  # fine-tuned once: reported and generated with
    adapted = tuner.generate(args.prompt, args.max_new_tokens, adaptations=result)
    selected = []
    seen: set[int] = set()
    for step, (seq_id, text) in enumerate(zip(result.seq_ids, result.texts, strict=True), 1):
        selected.append(
            {
                "step": step,
                "seq_id": seq_id,
                "repeat": seq_id in seen,
                "first_line": _first_line(text),
                "text": text,
            }
        )
        seen.add(seq_id)
    if args.json:
        record = {
            "prompt": args.prompt,
            "base": base,
            "adapted": adapted,
            "steps": result.steps,
            "selected": selected,
            "sigma": result.sigmas,
            "memory": tuner.memory.manifest["fingerprint"],
            "settings": {k: getattr(args, k) for k in ("selector", "n", "lam", "alpha", "k")},
        }
        print(json.dumps(record, indent=2, allow_nan=False))
        return
    print(f"prompt: {args.prompt}\n")
    print(f"base model:\n{args.prompt}{base}\n")
    print(f"adapted ({result.steps} steps):\n{args.prompt}{adapted}\n")
    print(f"selected by {args.selector} (n={args.n}, lambda'={args.lam}):")
    for s in selected:
        mark = " (repeat)" if s["repeat"] else ""
        print(f"  {s['step']:>3}  #{s['seq_id']:<7} {s['first_line']}{mark}")
    trace = " ".join(f"{x:.3f}" for x in result.sigmas)
    print(f"\nsigma_n (n = 0..{len(result.sigmas) - 1}): {trace}")
