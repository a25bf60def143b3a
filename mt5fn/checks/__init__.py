"""The checks every room shares, at the bottom of the stack: one validation layer for the public boundary.

Every public function (and every command line, through its options) runs
these before any work, so a malformed call ends with a ``ValueError`` or
``TypeError`` whose message names the argument (and the pytree path or field)
and the offending value -- never with an ``IndexError``, a ``KeyError`` or a
kernel error from deep inside. The property is stated and fuzzed in
``spec/test_boundary_fuzz.py``. All of it is safe under ``vmap``, ``grad`` and
``torch.compile`` (values are read only from plain eager tensors).

* ``_values``: plain ints, reals, bools, seeds, devices;
* ``_tree``: the parameter pytree against its config;
* ``_tensors``: token ids, masks, encoder outputs, generators, caches;
* ``preflight``: the memory a call would allocate, bounded before allocating it;
* ``read_json``: the one JSON reader, with errors that name the file.
"""

from . import _preflight as preflight
from ._json import MAX_DEPTH, check_depth, read_json, text_encoding, utf8_body
from ..kernels import is_plain_eager
from ._tensors import (ID_DTYPES, IGNORE_INDEX, check_cache_tensors, check_generator, check_hidden, check_ids,
                       check_mask, check_same_batch)
from ._tree import INT8_FORMS, INT8_ONLY, PARAM_DTYPES, check_params, int8_leaf, params_device, params_dtype
from ._values import (MAX_SEED, SCALE_RANGE, check_bool, check_device, check_dropout, check_int,
                      check_length_penalty, check_optional_int, check_real, check_rows, check_scale, check_seed, is_int,
                      is_real, short_repr)

__all__ = ["ID_DTYPES", "IGNORE_INDEX", "MAX_SEED", "PARAM_DTYPES", "SCALE_RANGE", "check_bool",
           "check_cache_tensors", "check_device", "check_dropout", "check_generator", "check_hidden", "check_ids",
           "check_int", "check_length_penalty", "check_mask", "check_optional_int", "check_params", "check_real",
           "check_rows", "check_same_batch", "check_scale", "check_seed", "is_int", "is_plain_eager", "is_real",
           "params_device", "params_dtype", "preflight", "read_json", "short_repr", "check_depth", "text_encoding",
           "utf8_body", "MAX_DEPTH", "INT8_FORMS", "INT8_ONLY", "int8_leaf"]
