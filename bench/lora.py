"""Batched per-prompt LoRA vs the naive one-prompt peft loop: prompts/s, ratio, bpb agreement
(testtime.benchmarks.lora says what each side does).

CPU, demo-size GPT-2, 16 prompts x 3 steps x 256 tokens, B=16 by default. Run:
python bench/lora.py [--preset gpt2-small] [--device cuda --bf16 --batch-prompts 32 ...]
"""

import sys

from testtime.benchmarks.lora import main

sys.exit(main())
