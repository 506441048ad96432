"""`make bench`: Tandem's benchmarks, each a ratio against a baseline measured in the same run.

Kept free of imports on purpose: the cold-start child interpreters import this package (``python -m
bench.child``) and everything imported here would be billed to the cold start being measured.
"""
