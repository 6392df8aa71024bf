"""`make bench`: benchmarks of what users feel, each as a ratio to a baseline measured in the same run.

Entry point: `python -m tests.bench.run [--quick] [--only B1,B4]` (see run.py). Not part of
`make test`: no module here is named test_*.py.
"""
