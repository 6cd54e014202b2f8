"""Our test-time fine-tuning loop vs the naive one-prompt Hugging Face loop: prompts/s, ratio,
and agreement of the bpb (testtime.benchmarks.finetune says what each side does).

CPU, demo-size GPT-2, 8 prompts x 10 steps by default. Run: python bench/finetune.py [--bf16]
[--threads 2] [--device cuda --batch-prompts 8 ...]
"""

import sys

from testtime.benchmarks.finetune import main

sys.exit(main())
