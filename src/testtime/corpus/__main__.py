"""``python -m testtime.corpus install|lock``: build or extend the pinned demo corpus directory
(:mod:`testtime.corpus.pinned`; ``make install`` calls it)."""

import sys

from testtime.corpus.pinned import main

sys.exit(main())
