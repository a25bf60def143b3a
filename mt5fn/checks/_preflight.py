"""Resource pre-flight: refuse a call whose biggest buffers cannot fit, before allocating any of them.

A small input can ask for an enormous allocation: a 10**6-token text makes a
(1, H, 10**6, 10**6) position bias (terabytes); ``max_new_tokens=10**12``
preallocates a K/V cache of ``2 x (L, rows, H, 10**12, d_kv)``. Without a
check the call spends minutes in the allocator, is killed by the kernel's OOM
killer, or fails with an allocator error that names no argument. Each public
entry point (``init_params``, ``encode``, ``decode``, ``forward``, ``loss``,
``generate`` and the command lines through it, ``init_cache``,
``decode_step``) first estimates the few buffers that dominate its peak
memory -- from shapes alone, so the estimate is free and safe under
transforms -- and raises a ``ValueError`` naming the arguments, the largest
buffer and the total, in bytes and human-readable, when the total exceeds the
bound:

* ``MT5FN_MAX_BUFFER_BYTES`` (an integer byte count) when set;
* else the device's total memory: for the CPU the physical RAM
  (``os.sysconf``), or the cgroup memory limit when one is lower; for CUDA the
  device's ``total_memory``; other devices are not bounded.

The estimate is of the largest transient buffers (position bias, attention
scores, FFN activations, logits, the decoding cache and beam buffers, the
activations autograd keeps), not an exact peak: it refuses calls that cannot
succeed, it does not promise that an accepted one fits beside everything else
in memory. While ``torch.compile`` traces, the check is skipped (it ran, or
would run, on the same shapes eagerly).

Time is bounded as well as memory. Beam search's work grows as beams x tokens
x vocabulary: ``num_beams=20000`` with 200 new tokens fits in memory and runs
for minutes. ``check_work`` estimates the work of a beam search,

    W = batch x num_beams x max_new_tokens x (vocab_size + max_new_tokens)

(each step scores every beam's whole vocabulary and copies every beam's
sequence, whose width grows to ``max_new_tokens``), and refuses a call whose
W exceeds ``MT5FN_MAX_WORK`` (an integer; ``0`` turns the bound off), by
default ``DEFAULT_MAX_WORK = 10**10``. How the default was chosen: on the
machine mt5fn is developed on (2 cores of an Intel Xeon Processor, torch on 2
threads) a beam search runs about 1.2e7 units of W a second (measured:
2000 beams x 20 tokens and 20000 beams x 10 tokens on a 300-token vocabulary,
7e-8 to 9e-8 s per unit), so 10**10 is about 10 to 15 minutes there -- past
that a call is more likely a typo than a job. It admits mT5's 250k vocabulary
with 4 beams x 200 tokens for 32 inputs at once (6.4e9) and refuses 20000
beams on it; raise the bound on a fast accelerator (``MT5FN_MAX_WORK=0``
removes it).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Iterable

import torch

from ..kernels import chunk_bytes

ENV_VAR = "MT5FN_MAX_BUFFER_BYTES"
WORK_ENV_VAR = "MT5FN_MAX_WORK"
DEFAULT_MAX_WORK = 10**10

Buffer = tuple[str, tuple[int, ...], int]  # (what, shape, bytes per element)


def human_bytes(count: int) -> str:
    """``2.9 TB``-style size (decimal units), three significant digits."""
    if count < 1000:
        return f"{count} B"
    exponent = min(int(math.log10(count) // 3), 8)
    unit = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")[exponent]
    return f"{count / 1000 ** exponent:.3g} {unit}"


def _cgroup_limit() -> int | None:
    for file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(file) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


@functools.lru_cache(maxsize=None)
def _ram_bytes() -> int | None:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        total = None
    limit = _cgroup_limit()
    if limit is not None and (total is None or limit < total):
        total = limit
    return total


def buffer_limit(device: torch.device | str | None = None) -> tuple[int | None, str]:
    """The byte bound for one call's buffers on ``device`` and where it comes from (None: unbounded)."""
    text = os.environ.get(ENV_VAR)
    if text is not None and text.strip():
        try:
            value = int(text.strip().replace("_", ""))
        except ValueError:
            value = -1
        if value < 1:
            raise ValueError(f"{ENV_VAR} must be a positive integer byte count, got {text!r}")
        return value, f"{ENV_VAR}={value}"
    device = torch.device("cpu" if device is None else device)
    if device.type == "cpu":
        total = _ram_bytes()
        return total, "this machine's memory; set MT5FN_MAX_BUFFER_BYTES to change the bound"
    if device.type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(device.index or 0).total_memory
        return total, f"the memory of {device}; set MT5FN_MAX_BUFFER_BYTES to change the bound"
    return None, ""


def nbytes(shape: Iterable[int], itemsize: int) -> int:
    return math.prod(int(size) for size in shape) * itemsize


def check_buffers(call: str, cause: str, buffers: list[Buffer], device: torch.device | str | None) -> None:
    """Raise ``ValueError`` when ``buffers`` together exceed ``buffer_limit(device)``.

    ``call`` names the function, ``cause`` the arguments that size the buffers (their names appear in
    the message, e.g. ``"input_ids (1, 800000)"``).
    """
    if torch.compiler.is_compiling():
        return
    limit, source = buffer_limit(device)
    if limit is None:
        return
    sizes = [(what, shape, nbytes(shape, itemsize)) for what, shape, itemsize in buffers]
    total = sum(size for _, _, size in sizes)
    if total <= limit:
        return
    what, shape, size = max(sizes, key=lambda entry: entry[2])
    raise ValueError(
        f"{call}: {cause} needs about {human_bytes(total)} ({total:,} bytes) for its largest buffers, more than "
        f"the bound of {human_bytes(limit)} ({source}); the largest is {what} {tuple(shape)}: {human_bytes(size)}")


# ------------------------------------------------------------------ the estimates
def _keeps_activations(params: dict) -> bool:
    """Autograd will keep every block's activations for the backward."""
    shared = params.get("shared") if isinstance(params, dict) else None
    return torch.is_grad_enabled() and isinstance(shared, torch.Tensor) and shared.requires_grad


def stack_buffers(cfg, stack: str, batch: int, length: int, memory: int, itemsize: int, *,
                  masked: bool, training: bool, checkpointed: bool) -> list[Buffer]:
    """One encoder (``memory == 0``) or decoder stack run over (batch, length) positions.

    The self-attention bias is (1 | B, H, T, T); scores and probabilities are (B, H, T, T); a
    decoder's cross-attention scores (B, H, T, memory); the FFN holds (B, T, d_ff) one to three
    times. With autograd keeping activations (``training``), each block's stay alive.
    """
    B, T, H = batch, length, cfg.num_heads
    layers = cfg.num_decoder_layers if stack == "decoder" else cfg.num_layers
    bias_rows = B if masked or stack == "decoder" else 1
    per_block: list[Buffer] = [
        (f"{stack} self-attention scores", (2, B, H, T, T), itemsize),
        (f"{stack} feed-forward activations", (3 if cfg.is_gated else 2, B, T, cfg.d_ff), itemsize),
        (f"{stack} hidden states", (6, B, T, cfg.d_model), itemsize),
    ]
    if memory:
        per_block.append((f"{stack} cross-attention scores", (2, B, H, T, memory), itemsize))
    kept = layers if training and not checkpointed else 1
    out: list[Buffer] = [(f"{stack} position bias", (bias_rows, H, T, T), itemsize)]
    out += [(what, (kept, *shape), size) for what, shape, size in per_block]
    if training and checkpointed:
        out.append((f"{stack} block inputs kept for recomputation", (layers, B, T, cfg.d_model), itemsize))
    return out


def _itemsize(params: dict) -> int:
    shared = params.get("shared") if isinstance(params, dict) else None
    return shared.element_size() if isinstance(shared, torch.Tensor) else 4


def _device(params: dict) -> torch.device | None:
    shared = params.get("shared") if isinstance(params, dict) else None
    return shared.device if isinstance(shared, torch.Tensor) else None


def check_encode(params: dict, cfg, input_ids: torch.Tensor, attention_mask, *, call: str = "encode",
                 checkpointed: bool = False) -> None:
    """The encoder over ``input_ids`` (B, S)."""
    batch, length = input_ids.shape
    buffers = stack_buffers(cfg, "encoder", batch, length, 0, _itemsize(params), masked=attention_mask is not None,
                            training=_keeps_activations(params), checkpointed=checkpointed)
    check_buffers(call, f"input_ids of shape {tuple(input_ids.shape)}", buffers, _device(params))


def check_decode(params: dict, cfg, decoder_ids: torch.Tensor, memory: int, *, call: str = "decode") -> None:
    batch, length = decoder_ids.shape
    buffers = stack_buffers(cfg, "decoder", batch, length, memory, _itemsize(params), masked=True,
                            training=_keeps_activations(params), checkpointed=False)
    check_buffers(call, f"decoder_input_ids of shape {tuple(decoder_ids.shape)}", buffers, _device(params))


def check_seq2seq(params: dict, cfg, input_ids: torch.Tensor, decoder_ids: torch.Tensor, attention_mask, *,
                  call: str, decoder_name: str, logits: str, checkpointed: bool = False) -> None:
    """``forward`` / ``loss``: both stacks and the head. ``logits``: "full" (B, T, V) returned,
    "loss" (float32 logits, log-probabilities and their gradient), or "fused" (one chunk)."""
    batch, source = input_ids.shape
    target = decoder_ids.shape[1]
    itemsize, training = _itemsize(params), _keeps_activations(params)
    buffers = stack_buffers(cfg, "encoder", batch, source, 0, itemsize, masked=attention_mask is not None,
                            training=training, checkpointed=checkpointed)
    buffers += stack_buffers(cfg, "decoder", batch, target, source, itemsize, masked=True, training=training,
                             checkpointed=checkpointed)
    vocab = cfg.vocab_size
    if logits == "full":
        buffers.append(("logits", (batch, target, vocab), itemsize))
    elif logits == "loss":
        buffers.append(("float32 logits, log-probabilities and their gradient", (3, batch, target, vocab), 4))
    else:
        buffers.append(("one chunk of float32 logits", (min(batch * target * vocab * 4, chunk_bytes()),), 1))
    check_buffers(call, f"input_ids {tuple(input_ids.shape)} and {decoder_name} {tuple(decoder_ids.shape)}",
                  buffers, _device(params))


def cache_buffers(cfg, rows: int, source: int, max_length: int, itemsize: int) -> list[Buffer]:
    """The decoding cache: self-attention K/V ``2 x (L, rows, H, max_length, d_kv)`` and cross K/V."""
    L, H, d_kv = cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv
    return [("the self-attention K/V cache", (2, L, rows, H, max_length, d_kv), itemsize),
            ("the cross-attention K/V", (2, L, rows, H, source, d_kv), itemsize)]


def check_cache(params: dict, cfg, batch: int, source: int, max_length: int, *, call: str = "init_cache",
                cause: str | None = None) -> None:
    cause = cause or f"max_length={max_length} for {batch} row(s)"
    check_buffers(call, cause, cache_buffers(cfg, batch, source, max_length, _itemsize(params)), _device(params))


def check_step(params: dict, cfg, batch: int, steps: int, max_length: int, inplace: bool) -> None:
    """``decode_step``: an out-of-place step writes a new cache; scores and logits for ``steps`` tokens."""
    itemsize = _itemsize(params)
    L, H, d_kv = cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv
    buffers: list[Buffer] = [("self-attention scores", (2, batch, H, steps, max_length), itemsize),
                             ("logits", (batch, steps, cfg.vocab_size), itemsize)]
    if not inplace:
        buffers.append(("the new self-attention K/V cache", (2, L, batch, H, max_length, d_kv), itemsize))
    check_buffers("decode_step", f"token_ids of shape {(batch, steps)} with a {max_length}-slot cache", buffers,
                  _device(params))


def check_generate(params: dict, cfg, input_ids: torch.Tensor, attention_mask, *, max_new_tokens: int,
                   num_beams: int, num_return_sequences: int, beam_search: bool) -> None:
    """``generate`` / the command line: the encoder, the cache for every row, the per-step logits and
    the token buffers (beam search keeps running, finished and candidate sequences)."""
    batch, source = input_ids.shape
    itemsize = _itemsize(params)
    width = 1 + max_new_tokens
    rows = batch * (num_beams if beam_search else num_return_sequences)
    buffers = stack_buffers(cfg, "encoder", batch, source, 0, itemsize, masked=attention_mask is not None,
                            training=False, checkpointed=False)
    buffers += cache_buffers(cfg, rows, source, max_new_tokens, itemsize)
    tables = cfg.num_decoder_layers if cfg.per_layer_position_bias else 1
    buffers.append(("the decoder's distance bias", (tables, cfg.num_heads, max_new_tokens), itemsize))
    buffers.append(("per-step float32 scores", (3, rows, cfg.vocab_size), 4))
    if beam_search:
        buffers.append(("beam candidates' scores", (2, batch, num_beams * cfg.vocab_size), 4))
        buffers.append(("beam sequences (running, finished, candidates)", (6, rows, width), 8))
    else:
        buffers.append(("the output sequences", (rows, width), 8))
    cause = (f"input_ids of shape {tuple(input_ids.shape)} with max_new_tokens={max_new_tokens}, "
             f"num_beams={num_beams}, num_return_sequences={num_return_sequences}")
    check_buffers("generate", cause, buffers, _device(params))
    if beam_search:
        check_work("generate", cause, batch * num_beams * max_new_tokens * (cfg.vocab_size + max_new_tokens))


def work_limit() -> int | None:
    """``MT5FN_MAX_WORK`` when set (``0``: no bound), else ``DEFAULT_MAX_WORK`` (module docstring)."""
    text = os.environ.get(WORK_ENV_VAR)
    if text is None or not text.strip():
        return DEFAULT_MAX_WORK
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{WORK_ENV_VAR}={text!r} must be a non-negative integer (0: no bound)") from None
    if value < 0:
        raise ValueError(f"{WORK_ENV_VAR}={text!r} must be a non-negative integer (0: no bound)")
    return value or None


def check_work(call: str, cause: str, work: int) -> None:
    """Refuse ``work`` (in the units of the module docstring) past ``work_limit()``."""
    if torch.compiler.is_compiling():
        return
    limit = work_limit()
    if limit is not None and work > limit:
        raise ValueError(f"{call}: {cause} is about {work:.3g} units of work (beams x tokens x (vocabulary + "
                         f"tokens)), more than the bound {limit:.3g} ({WORK_ENV_VAR}; about 1.2e7 units a second on "
                         "a 2-core CPU); lower num_beams or max_new_tokens, or raise the bound")


def check_init(cfg, dtype: torch.dtype, device) -> None:
    """``init_params``: every parameter of the config in ``dtype`` (plus the float32 draw of the largest)."""
    d, inner, d_ff, V = cfg.d_model, cfg.inner_dim, cfg.d_ff, cfg.vocab_size
    attention = 4 * inner * d
    ffn = (3 if cfg.is_gated else 2) * d_ff * d
    table = cfg.relative_attention_num_buckets * cfg.num_heads
    tables_per_stack = 1
    encoder = cfg.num_layers * (attention + ffn + 2 * d + (table if cfg.per_layer_position_bias else 0))
    decoder = cfg.num_decoder_layers * (2 * attention + ffn + 3 * d + (table if cfg.per_layer_position_bias else 0))
    shared_tables = 0 if cfg.per_layer_position_bias else 2 * tables_per_stack * table
    head = 0 if cfg.tie_word_embeddings else V * d
    total = V * d + encoder + decoder + shared_tables + 2 * d + head
    itemsize = torch.empty((), dtype=dtype).element_size()
    buffers: list[Buffer] = [("the parameters", (total,), itemsize), ("the float32 draw of the embedding", (V, d), 4)]
    check_buffers("init_params", f"cfg with {total:,} parameters", buffers, device)
