"""Plain int / real arguments across the rooms go through one validator (``mt5fn.checks``).

Each call below passes one bad plain value -- a bool where an int is wanted, a
string, NaN / inf, an int too large for a float, a value out of range -- and
must end in a ``ValueError`` (or its ``DataError`` subclass) that names the
argument and shows the value, never a ``TypeError`` from a comparison or an
``OverflowError`` from ``float()``.
"""

from __future__ import annotations

import math

import pytest
import torch

import mt5fn
from mt5fn.data import collate, span_corruption
from mt5fn.data._examples import check_lengths
from mt5fn.data._packing import pack
from mt5fn.data._plan import check_geometry
from mt5fn.data._readers import DataError
from mt5fn.demo._numbers import spell
from mt5fn.checks import check_int, check_real, is_int, is_real
from mt5fn.training._optim import make_optimizer
from mt5fn.training._schedule import lr_factor

HUGE = 10 ** 400  # an int no float can hold


@pytest.mark.parametrize("value, expected", [
    (3, True), (0, True), (-1, False), (True, False), (False, False), (3.0, False), ("3", False), (None, False),
])
def test_is_int_refuses_bools_floats_and_strings(value, expected):
    assert is_int(value, 0) is expected


@pytest.mark.parametrize("value, expected", [
    (0.5, True), (1, True), (True, False), (math.nan, False), (math.inf, False), (HUGE, False), ("0.5", False),
])
def test_is_real_is_a_finite_number_that_is_not_a_bool(value, expected):
    assert is_real(value) is expected


def test_bounds_are_inclusive_or_strict_as_named():
    assert is_real(0.0, at_least=0.0) and not is_real(0.0, above=0.0)
    assert is_real(1.0, at_most=1.0) and not is_real(1.0, below=1.0)
    assert is_int(5, 0, 5) and not is_int(6, 0, 5)


def test_messages_name_the_argument_the_requirement_and_the_value():
    with pytest.raises(ValueError, match=r"^steps must be an int >= 1, got 0$"):
        check_int("steps", 0, 1)
    with pytest.raises(ValueError, match=r"^n must be an int in \[0, 9\], got 10$"):
        check_int("n", 10, 0, 9)
    with pytest.raises(DataError, match=r"^--x must be a positive int, got True$"):
        check_int("--x", True, 1, words="a positive int", error=DataError)
    with pytest.raises(ValueError, match=r"^lr must be a finite number > 0, got 0$"):
        check_real("lr", 0, above=0.0)
    with pytest.raises(ValueError, match=r"^p must be a finite number >= 0 and < 1, got 1.0$"):
        check_real("p", 1.0, at_least=0.0, below=1.0)
    long_value = "x" * 500
    with pytest.raises(ValueError) as caught:
        check_int("name", long_value, 0)
    assert len(str(caught.value)) < 200  # a huge bad argument is cut in the message


def _params():
    return [torch.nn.Parameter(torch.zeros(2))]


CALLS = [
    ("warmup_steps", lambda: lr_factor("constant", warmup_steps=True)),
    ("total_steps", lambda: lr_factor("cosine", 2, 2.5)),
    ("final_ratio", lambda: lr_factor("cosine", 2, 5, final_ratio="0.1")),
    ("final_ratio", lambda: lr_factor("cosine", 2, 5, final_ratio=math.nan)),
    ("total_steps", lambda: lr_factor("constant", 0, True)),
    ("lr", lambda: make_optimizer({"w": torch.zeros(2)}, "adamw", lr=HUGE)),
    ("lr", lambda: make_optimizer({"w": torch.zeros(2)}, "adamw", lr=math.inf)),
    ("weight_decay", lambda: make_optimizer({"w": torch.zeros(2)}, "adamw", lr=1e-3, weight_decay="0")),
    ("noise_density", lambda: span_corruption(torch.arange(3, 40), vocab_size=100, eos_id=1,
                                              noise_density=True)),
    ("mean_noise_span_length", lambda: span_corruption(torch.arange(3, 40), vocab_size=100, eos_id=1,
                                                       mean_noise_span_length=math.inf)),
    ("vocab_size", lambda: span_corruption(torch.arange(3, 40), vocab_size=True, eos_id=1)),
    ("eos_id", lambda: span_corruption(torch.arange(3, 40), vocab_size=100, eos_id=100)),
    ("extra_ids", lambda: span_corruption(torch.arange(3, 40), vocab_size=100, eos_id=1, extra_ids=101)),
    ("pad_id", lambda: collate([(torch.tensor([3, 1]), torch.tensor([4, 1]))], pad_id=-1)),
    ("length", lambda: pack([torch.tensor([3, 1])], length=0)),
    ("--batch-size", lambda: check_geometry(True, 1, 1)),
    ("--max-target-length", lambda: check_lengths(8, 1)),
    ("n", lambda: spell(-1, "en")),
    ("vocab_size", lambda: mt5fn.train_tokenizer(["a b c"], "unused", vocab_size=8.0)),
    ("character_coverage", lambda: mt5fn.train_tokenizer(["a b c"], "unused", vocab_size=64,
                                                         character_coverage=0)),
]


@pytest.mark.parametrize("name, call", CALLS, ids=[f"{i}-{name}" for i, (name, _) in enumerate(CALLS)])
def test_public_calls_refuse_bad_plain_values_by_name(name, call):
    with pytest.raises(ValueError, match=rf"^{name} must be .*, got "):
        call()
