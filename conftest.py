"""Shared pytest setup: Hypothesis profiles for the executable specification.

``ci`` (the default) is bounded and derandomised so the suite is fast and
reproducible; ``thorough`` explores much more and is meant for local runs:

    MT5FN_HYPOTHESIS_PROFILE=thorough python -m pytest spec

It also puts the kernel choice in its deterministic mode (below).
"""

import os
import sys

import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tests"))

# Kernel choice by measurement (mt5fn.kernels.kernel_choice) takes its fixed rule in tests: results then
# do not depend on a noisy clock, and no test writes the user's kernel-choice file. Tests of the
# measurement itself set the mode they need.
os.environ.setdefault("MT5FN_KERNEL_CACHE", "deterministic")

settings.register_profile(
    "ci", max_examples=12, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", max_examples=300, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("MT5FN_HYPOTHESIS_PROFILE", "ci"))

# Tiny test models gain nothing from intra-op threads and lose a lot when cores are shared.
torch.set_num_threads(1)
