"""testtime: test-time fine-tuning of language models with SIFT data selection."""

__version__ = "0.1.0"
