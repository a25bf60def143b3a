"""The one place that asks "is this call under ``vmap`` / forward-mode AD / a compiler?".

Two questions need it: which attention kernel may run (SDPA has no batching
rule and no forward-mode derivative on the CPU), and whether a tensor's
*values* may be read for a boundary check (a transform or a compiler cannot
``bool()`` a tensor). Both answers come from here so they never disagree.
"""

from __future__ import annotations

import torch
from torch import Tensor


def under_batching_or_forward_ad() -> bool:
    """True inside ``vmap`` or forward-mode AD (``jvp`` / ``jacfwd``); never while compiling."""
    if torch.compiler.is_compiling():
        return False
    if torch.autograd.forward_ad._current_level >= 0:
        return True
    interpreters = torch._functorch.pyfunctorch.retrieve_all_functorch_interpreters()
    grad_only = (torch._C._functorch.TransformType.Grad,)
    return any(interp.key() not in grad_only for interp in interpreters)


def under_functorch() -> bool:
    """True inside any ``torch.func`` transform (``grad`` included)."""
    return bool(torch._functorch.pyfunctorch.retrieve_all_functorch_interpreters())


def is_plain_eager(tensor: Tensor) -> bool:
    """True when ``tensor``'s values can be read: eager, not traced, not wrapped by torch.func."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) or tensor.device.type == "meta":
        return False
    return not torch._C._functorch.is_functorch_wrapped_tensor(tensor)


def plain_or_one_grad() -> bool:
    """True for plain reverse mode or a single ``torch.func.grad`` (and while compiling): not
    ``vmap``, not forward-mode AD, not nested transforms (those differentiate a backward again)."""
    if torch.compiler.is_compiling():
        return True
    if torch.autograd.forward_ad._current_level >= 0:
        return False
    interpreters = torch._functorch.pyfunctorch.retrieve_all_functorch_interpreters()
    grad = torch._C._functorch.TransformType.Grad
    return len(interpreters) <= 1 and all(interp.key() == grad for interp in interpreters)
