"""Batched exact SIFT vs activeft's exact SIFT on identical inputs: times, ratio, final variances.

CPU, 1 thread, B=32 K=200 d=768 n=50 lam=0.1 by default (testtime.benchmarks.selection says
how activeft is fed). Run: python bench/selection.py [--repeats 5] [--device cuda ...]
"""

import sys

from testtime.benchmarks.selection import main

sys.exit(main())
