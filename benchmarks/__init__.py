"""Side-by-side speed and memory comparisons of mt5fn and transformers (not tests).

Run ``python -m benchmarks --help``. Modules: ``cli`` (arguments, the entry
point), ``models`` (one checkpoint, both implementations), ``cases`` (the
work being timed), ``measure`` (time, memory, FLOPs, matmul peak), ``run``
and ``report`` (the tables).
"""
