"""Plain values at the public boundary: ints, reals, bools, seeds, devices.

Every room checks its plain int / real arguments here: one definition of "an
int" (a bool is not one) and of "a finite number", so no check can disagree
with another. ``words`` keeps a room's own phrasing of the requirement,
``error`` its ``ValueError`` subclass. Numeric options are also kept inside
ranges whose results do not overflow (``check_scale``, ``check_length_penalty``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

# Multiplicative score settings (temperature, repetition penalty) must lie in [1e-15, 1e15]: the decoding
# loops divide / multiply float32 scores by both, so together they scale a score by at most 1e30, and a
# score up to 1e8 in magnitude stays finite (float32 max is 3.4e38). Outside, temperature=1e-45 turns
# every positive logit into +inf and the softmax into NaN (torch.multinomial then fails), and
# repetition_penalty=1e-300 does the same to the tokens already generated.
SCALE_RANGE = (1e-15, 1e15)
_LOG_FLOAT32_MAX = math.log(torch.finfo(torch.float32).max)  # 88.72...

# torch.Generator.manual_seed takes seeds in [-2**63, 2**64); mt5fn's seeds are the non-negative part.
MAX_SEED = 2 ** 64 - 1


def is_int(value: Any, minimum: int | None = None, maximum: int | None = None) -> bool:
    """``value`` is an ``int`` (not a bool) in ``[minimum, maximum]`` (either bound may be None)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and (minimum is None or value >= minimum) and (maximum is None or value <= maximum))


def is_real(value: Any, *, at_least: float | None = None, above: float | None = None,
            below: float | None = None, at_most: float | None = None) -> bool:
    """``value`` is a finite real number (an int or a float, not a bool) within the bounds given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        as_float = float(value)
    except OverflowError:  # an int beyond float range
        return False
    return (math.isfinite(as_float) and (at_least is None or as_float >= at_least)
            and (above is None or as_float > above) and (below is None or as_float < below)
            and (at_most is None or as_float <= at_most))


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None, *, words: str | None = None,
              error: type[ValueError] = ValueError) -> int:
    """An ``int`` (not a bool) in ``[minimum, maximum]``; else ``error`` says "``name`` must be ``words``"."""
    if not is_int(value, minimum, maximum):
        if words is None:
            words = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
        raise error(f"{name} must be {words}, got {short_repr(value)}")
    return value


def check_optional_int(name: str, value: Any, minimum: int, maximum: int | None = None, *,
                       words: str | None = None, error: type[ValueError] = ValueError) -> int | None:
    return None if value is None else check_int(name, value, minimum, maximum, words=words, error=error)


def check_real(name: str, value: Any, *, at_least: float | None = None, above: float | None = None,
               below: float | None = None, at_most: float | None = None, words: str | None = None,
               error: type[ValueError] = ValueError) -> float:
    """A finite real number (not a bool) within the bounds given, as a float."""
    if not is_real(value, at_least=at_least, above=above, below=below, at_most=at_most):
        if words is None:
            bounds = [f">= {at_least:g}" if at_least is not None else "", f"> {above:g}" if above is not None else "",
                      f"< {below:g}" if below is not None else "", f"<= {at_most:g}" if at_most is not None else ""]
            words = " ".join(["a finite number", " and ".join(b for b in bounds if b)]).strip()
        raise error(f"{name} must be {words}, got {short_repr(value)}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {short_repr(value)}")
    return value


def check_dropout(rate: Any, name: str = "dropout_rate") -> float:
    return check_real(name, rate, at_least=0.0, below=1.0, words="a float in [0, 1)")


def check_scale(name: str, value: Any) -> float:
    """A multiplicative score setting in ``SCALE_RANGE`` (see there for why)."""
    value = check_real(name, value)
    low, high = SCALE_RANGE
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}] (scores are scaled by it in float32 and "
                         f"overflow outside that range), got {value!r}")
    return value


def check_length_penalty(value: Any, max_new_tokens: int | None) -> float:
    """Beam search divides float32 scores by ``length ** length_penalty`` for lengths up to
    ``max_new_tokens``: the power must stay inside float32's range (else it overflows -- Python raises
    ``OverflowError`` -- or underflows to 0 and every finished beam scores -inf)."""
    value = check_real("length_penalty", value)
    if max_new_tokens is not None and max_new_tokens > 1:
        bound = _LOG_FLOAT32_MAX / math.log(max_new_tokens)
        if abs(value) > bound:
            raise ValueError(f"length_penalty must lie in [-{bound:.4g}, {bound:.4g}] for max_new_tokens="
                             f"{max_new_tokens} (length ** length_penalty overflows float32 beyond), "
                             f"got {value!r}")
    return value


def check_seed(name: str, seed: Any) -> int:
    """A seed torch's generators accept: an int in ``[0, 2**64 - 1]``."""
    return check_int(name, seed, 0, MAX_SEED)


def check_rows(rows: Any) -> int | None:
    """The ``rows`` hint of ``prepare_decoding``: None or an int >= 1."""
    return check_optional_int("rows", rows, 1)


def check_device(name: str, device: Any) -> torch.device | None:
    """None or a device string / ``torch.device`` that names a device this build and machine have.

    Refuses up front what torch would refuse late and unclearly (``--device cuda`` on a CPU-only
    build fails with an ``AssertionError`` from inside the first ``.to``)."""
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)) or isinstance(device, bool):
        raise TypeError(f"{name} must be a device string like 'cpu' or 'cuda:0', or a torch.device, "
                        f"got {type(device).__name__}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{name}: {device!r} is not a torch device ({error})") from None
    kind = parsed.type
    if kind in ("cpu", "meta"):
        return parsed
    backend = getattr(torch, kind, None)
    is_available = getattr(backend, "is_available", None)
    if is_available is None or not is_available():
        why = "this torch build has no CUDA" if kind == "cuda" and not torch.backends.cuda.is_built() else \
            f"no {kind} device is available"
        raise ValueError(f"{name}: device {str(parsed)!r} cannot be used ({why})")
    count = getattr(backend, "device_count", lambda: 1)()
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(f"{name}: device {str(parsed)!r} does not exist ({count} {kind} device(s))")
    return parsed


def short_repr(value: Any) -> str:
    """``repr`` of a value, cut to a readable length (a malformed argument can be huge)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."

