"""Cross-entropy of the vocabulary head without materialising the (tokens, vocab) logits.

With mT5's 250k vocabulary the logits of a modest batch are hundreds of MB, and
``F.cross_entropy`` keeps them, their log-softmax and two gradients of the same
size alive at once. Here the head's matmul and the loss run over row chunks of
the tokens (the fused "linear cross-entropy" of e.g. Liger Kernel, Hsu et al.
2024): each chunk's logits become, in place, the gradient of its loss
``softmax - onehot``, which is folded into the gradients of the hidden states
and of the head weight right away. Backward only scales those by the incoming
gradient. The FLOPs are those of the unfused forward + backward; the memory of
the logits drops to one chunk.

The per-row arithmetic is the usual one (log-sum-exp in float32, the label's
logit subtracted), so the value matches ``F.cross_entropy`` to float32 round-off.
The gradients are exact for first-order reverse mode; a second derivative
through this function is refused (``once_differentiable``), and the model falls
back to the plain path under ``vmap``, forward-mode AD or nested ``grad``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._transforms import plain_or_one_grad, under_functorch

IGNORE_INDEX = -100
# float32 logits per chunk. Large on purpose: every chunk's ``grad_weight.addmm_`` reads and
# writes the whole (V, d) head gradient, so small chunks turn one GEMM into many memory passes
# (measured: 33-row chunks made the mt5-small training step slower than unfused).
CHUNK_BYTES = 256 * 1024 * 1024


def _log_tiny(dtype: torch.dtype) -> float:
    """A floor for ``x - max`` whose exp stays a normal number of ``dtype`` (-86.3 for float32);
    one above log(tiny), since exp() right at the boundary still takes the slow path."""
    return math.log(torch.finfo(dtype).tiny) + 1.0


def chunk_bytes() -> int:
    """The bytes of float32 logits one chunk holds (read at call time: tests shrink it)."""
    return CHUNK_BYTES


def chunk_rows(vocab_size: int) -> int:
    return max(1, CHUNK_BYTES // (4 * vocab_size))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(hidden: Tensor, weight: Tensor, labels: Tensor, chunk: int, need_grad: bool):
        loss_dtype = torch.promote_types(weight.dtype, torch.float32)  # half -> float32; float64 stays
        total = torch.zeros((), dtype=loss_dtype, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_grad else hidden.new_empty(0)  # (N, d)
        grad_weight = weight.new_empty(0)  # (V, d) once the first chunk has written it
        for start in range(0, hidden.shape[0], chunk):
            rows = hidden[start:start + chunk]  # (c, d)
            target = labels[start:start + chunk]  # (c,)
            keep = target != IGNORE_INDEX  # (c,)
            safe = target.clamp(min=0)[:, None]  # (c, 1): ignored rows pick column 0, weighted 0 below
            logits = (rows @ weight.t()).to(loss_dtype)  # (c, V)
            picked = logits.gather(1, safe).squeeze(1)  # (c,)
            row_max = logits.amax(dim=-1, keepdim=True)  # (c, 1)
            # exp(x - max) in place. Terms below the smallest normal float are floored to it: they
            # add < V * tiny to the sum (invisible next to the max's 1), and exp() of inputs that
            # would give subnormals runs several times slower on CPUs (measured 1.2 s vs 0.2 s for
            # 256 x 250k random-init logits), which made this loop slower than the unfused loss.
            exps = logits.sub_(row_max).clamp_(min=_log_tiny(loss_dtype)).exp_()  # (c, V)
            sums = exps.sum(dim=-1)  # (c,)
            lse = row_max.squeeze(1) + sums.log()  # (c,)
            total = total + torch.where(keep, lse - picked, 0.0).sum()
            if need_grad:
                probs = exps.div_(sums[:, None])  # (c, V) softmax, in place of the logits
                probs.scatter_add_(1, safe, -torch.ones_like(picked)[:, None])  # softmax - onehot
                probs.mul_(keep.to(probs.dtype)[:, None])
                delta = probs.to(weight.dtype)  # (c, V)
                grad_hidden[start:start + chunk] = delta @ weight  # (c, d)
                if start == 0:
                    grad_weight = delta.t() @ rows  # (V, d)
                else:
                    grad_weight.addmm_(delta.t(), rows)  # (V, d)
        return total, grad_hidden, grad_weight

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, grad_hidden, grad_weight = output
        ctx.mark_non_differentiable(grad_hidden, grad_weight)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.spent = False

    @staticmethod
    def backward(ctx, grad_total, _unused_hidden, _unused_weight):
        plain_autograd = not (torch.compiler.is_compiling() or under_functorch())
        if plain_autograd and torch.is_grad_enabled():
            # create_graph=True: the gradients were computed in the forward and carry no graph,
            # so a second derivative would be silently wrong; say so instead.
            raise RuntimeError(
                "mt5fn.loss's fused cross-entropy is first-order only (create_graph=True was asked); "
                "for second derivatives use torch.func transforms (hessian, nested grad), which take "
                "the unfused path, or F.cross_entropy on mt5fn.forward's logits")
        return _LinearCrossEntropy._first_order_backward(ctx, grad_total)

    @staticmethod
    @once_differentiable
    def _first_order_backward(ctx, grad_total):
        if ctx.spent:
            raise RuntimeError("mt5fn.loss's fused cross-entropy can be differentiated once per forward "
                               "(retain_graph=True is not supported); compute the loss again")
        ctx.spent = True
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_total.to(grad_hidden.dtype)
        if torch.compiler.is_compiling() or under_functorch():
            # transforms refuse in-place updates of captured tensors (and the compiler plans memory itself)
            return grad_hidden * scale, grad_weight * scale, None, None, None
        # plain autograd: in place, since a fresh (V, d) product would double the head gradient's memory
        return grad_hidden.mul_(scale), grad_weight.mul_(scale), None, None, None


def fused_loss_applies() -> bool:
    """The fused path needs plain (or one ``torch.func.grad``) reverse mode."""
    return plain_or_one_grad()


def linear_cross_entropy(hidden: Tensor, weight: Tensor, labels: Tensor, *, reduction: str = "mean") -> Tensor:
    """``F.cross_entropy(hidden @ weight.T, labels, ignore_index=-100, reduction=...)``, fused and chunked.

    hidden: (N, d); weight: (V, d); labels: (N,) with -100 ignored. Returns a 0-d tensor (float32 for half weights);
    ``"mean"`` divides by the number of kept labels (NaN when there are none, as ``F.cross_entropy``).
    """
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    total, _, _ = _LinearCrossEntropy.apply(hidden, weight, labels, chunk_rows(weight.shape[0]), need_grad)
    if reduction == "sum":
        return total
    return total / (labels != IGNORE_INDEX).sum()
