"""Shared pytest setup: Hypothesis profiles for the executable specification.

``ci`` (the default) is bounded and derandomised so the suite is fast and
reproducible; ``thorough`` explores much more and is meant for local runs:

    MT5FN_HYPOTHESIS_PROFILE=thorough python -m pytest spec
"""

import os
import sys

import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tests"))

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
