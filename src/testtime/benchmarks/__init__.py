"""Benchmarks behind ``testtime bench``: each module has ``main(argv=None)`` and prints its
numbers next to a baseline measured in the same run."""
