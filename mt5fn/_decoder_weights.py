"""The decoder's weights as a decoding step reads them: from the pytree, or fused and re-laid-out.

A cached decoding step (``mt5fn._cache``) needs, per decoder block, the
self-attention query/key/value of the new token, the two output projections,
the cross-attention query, the feed-forward sublayer, and at the end the LM
head. Two providers answer those questions:

* ``ParamDecoder`` reads the parameter pytree as it is, with ``F.linear``. It
  holds no copies, so ``decode_step`` stays a pure function of ``params`` that
  ``torch.func.grad`` / ``vmap`` can transform.
* ``PreparedDecoder`` serves the generation loop: q/k/v fused into one matrix,
  the two gated-FFN inputs fused, every cross-attention K/V projection of all
  blocks fused into one matrix (computed once per input), each matrix in the
  layout ``PreparedLinear`` found fastest for the step's row count, and the
  decoder's relative position bias tabulated per distance so a step slices it
  instead of recomputing buckets. Building it copies the decoder and the head
  once; ``prepared_decoder`` memoises the last one, keyed on the identity and
  version counter of every weight it read, so repeated ``generate`` calls on
  unchanged parameters pay for it once (an in-place update, e.g. an optimiser
  step, bumps the version and forces a rebuild).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ._config import MT5Config
from ._fast_linear import MIN_PREPARED_NUMEL, PreparedLinear
from ._params import iter_leaves
from .functional import ACTIVATION_FUNCTIONS, position_bias, project_key_value


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the body with ``count`` intra-op threads, restoring the setting afterwards."""
    saved = torch.get_num_threads()
    if count == saved:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _tables(params: dict, cfg: MT5Config) -> list[Tensor]:
    """Decoder relative-position tables, one per block (UMT5) or block 0's shared one."""
    stack = params["decoder"]
    if cfg.per_layer_position_bias:
        return [block["rel_bias"] for block in stack["blocks"]]
    return [stack["rel_bias"]]


class ParamDecoder:
    """Decoder projections straight from the pytree (pure; works under ``torch.func``)."""

    def __init__(self, params: dict, cfg: MT5Config) -> None:
        self.cfg = cfg
        self.embed = params["shared"]  # (V, d)
        self.blocks = params["decoder"]["blocks"]
        self.final_norm = params["decoder"]["final_norm"]
        self.head_weight = params.get("lm_head", params["shared"])  # (V, d)
        self.tables = _tables(params, cfg)

    def norms(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        block = self.blocks[layer]
        return block["self_attn_norm"], block["cross_attn_norm"], block["mlp_norm"]

    def self_qkv(self, layer: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        p = self.blocks[layer]["self_attn"]
        return F.linear(x, p["q"]), F.linear(x, p["k"]), F.linear(x, p["v"])  # 3 x (B, T, H*d_kv)

    def self_out(self, layer: int, context: Tensor) -> Tensor:
        return F.linear(context, self.blocks[layer]["self_attn"]["o"])  # (B, T, d)

    def cross_query(self, layer: int, x: Tensor) -> Tensor:
        return F.linear(x, self.blocks[layer]["cross_attn"]["q"])  # (B, T, H*d_kv)

    def cross_out(self, layer: int, context: Tensor) -> Tensor:
        return F.linear(context, self.blocks[layer]["cross_attn"]["o"])  # (B, T, d)

    def ffn_inner(self, layer: int, x: Tensor) -> Tensor:
        p, act = self.blocks[layer]["mlp"], ACTIVATION_FUNCTIONS[self.cfg.activation]
        if "wi" in p:
            return act(F.linear(x, p["wi"]))  # (B, T, d_ff)
        return act(F.linear(x, p["wi_0"])) * F.linear(x, p["wi_1"])  # (B, T, d_ff)

    def ffn_out(self, layer: int, inner: Tensor) -> Tensor:
        wo = self.blocks[layer]["mlp"]["wo"]
        if inner.dtype != wo.dtype:
            inner = inner.to(wo.dtype)  # transformers keeps ``wo`` in float32 for half models
        return F.linear(inner, wo)  # (B, T, d)

    def head(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.head_weight)  # (B, T, V)

    def step_bias(self, layer: int, query_length: int, key_length: int, offset: int | Tensor) -> Tensor:
        """Causal relative position bias of queries at ``offset + arange(query_length)``: (1, H, Tq, Tk)."""
        table = self.tables[layer if self.cfg.per_layer_position_bias else 0]
        return position_bias(table, query_length, key_length, bidirectional=False,
                             max_distance=self.cfg.relative_attention_max_distance, query_offset=offset)

    def cross_key_value(self, encoder_hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Every block's cross-attention keys and values: two (L, B, H, S, d_kv)."""
        pairs = [project_key_value(block["cross_attn"], encoder_hidden, self.cfg.num_heads) for block in self.blocks]
        return torch.stack([k for k, _ in pairs]), torch.stack([v for _, v in pairs])


class PreparedDecoder(ParamDecoder):
    """Fused, re-laid-out decoder weights for ``rows`` rows per step (the generation loop's)."""

    def __init__(self, params: dict, cfg: MT5Config, rows: int, *, min_numel: int = MIN_PREPARED_NUMEL) -> None:
        super().__init__(params, cfg)
        self.rows = rows
        self._bias_length = 1  # the generation loop sets its cache length here
        self.head_threads: int | None = None  # the generation loop sets torch's thread count here

        def prepare(weight: Tensor) -> PreparedLinear:
            return PreparedLinear(weight, rows, min_numel=min_numel)

        self.qkv, self.o_self, self.q_cross, self.o_cross, self.wi, self.wo = [], [], [], [], [], []
        for block in self.blocks:
            attn, cross, mlp = block["self_attn"], block["cross_attn"], block["mlp"]
            self.qkv.append(prepare(torch.cat([attn["q"], attn["k"], attn["v"]])))  # (3 H d_kv, d)
            self.o_self.append(prepare(attn["o"]))
            self.q_cross.append(prepare(cross["q"]))
            self.o_cross.append(prepare(cross["o"]))
            wi = mlp["wi"] if "wi" in mlp else torch.cat([mlp["wi_0"], mlp["wi_1"]])  # (2 d_ff, d) when gated
            self.wi.append(prepare(wi))
            self.wo.append(prepare(mlp["wo"]))
        self.lm_head = prepare(self.head_weight)
        # All blocks' cross K and V in one matrix: one projection of the encoder output per input.
        # Its row count is batch x source length, not ``rows``: keep the oneDNN blocking generic.
        cross_kv = torch.cat([torch.cat([b["cross_attn"]["k"], b["cross_attn"]["v"]]) for b in self.blocks])
        self.cross_kv = PreparedLinear(cross_kv, max(rows, 2), min_numel=min_numel)  # (L 2 H d_kv, d)
        self._distance_bias: dict[int, list[Tensor]] = {}

    def distance_bias(self, max_length: int) -> list[Tensor]:
        """Bias per causal distance 0 .. max_length-1 for each table, stored reversed.

        Column j holds distance ``max_length-1-j``, so the keys 0..p of a query at
        position p read the contiguous slice ``[max_length-1-p, max_length)``: a step
        slices a view instead of recomputing buckets. Each (1, H, 1, max_length).
        """
        if max_length not in self._distance_bias:
            self._distance_bias = {max_length: [
                position_bias(table, 1, max_length, bidirectional=False,
                              max_distance=self.cfg.relative_attention_max_distance,
                              query_offset=max_length - 1)
                for table in self.tables]}
        return self._distance_bias[max_length]

    def self_qkv(self, layer: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.qkv[layer](x).chunk(3, dim=-1)  # 3 x (B, T, H*d_kv)

    def self_out(self, layer: int, context: Tensor) -> Tensor:
        return self.o_self[layer](context)

    def cross_query(self, layer: int, x: Tensor) -> Tensor:
        return self.q_cross[layer](x)

    def cross_out(self, layer: int, context: Tensor) -> Tensor:
        return self.o_cross[layer](context)

    def ffn_inner(self, layer: int, x: Tensor) -> Tensor:
        act = ACTIVATION_FUNCTIONS[self.cfg.activation]
        inner = self.wi[layer](x)  # (B, T, d_ff) or (B, T, 2 d_ff)
        if not self.cfg.is_gated:
            return act(inner)
        gate, linear = inner.chunk(2, dim=-1)
        return act(gate) * linear  # (B, T, d_ff)

    def ffn_out(self, layer: int, inner: Tensor) -> Tensor:
        if inner.dtype != self.blocks[layer]["mlp"]["wo"].dtype:
            inner = inner.to(self.blocks[layer]["mlp"]["wo"].dtype)
        return self.wo[layer](inner)

    def head(self, hidden: Tensor) -> Tensor:
        if self.head_threads is None:
            return self.lm_head(hidden)
        with intra_op_threads(self.head_threads):
            return self.lm_head(hidden)

    def step_bias(self, layer: int, query_length: int, key_length: int, offset: int | Tensor) -> Tensor:
        if query_length == 1 and isinstance(offset, int) and key_length == offset + 1:
            tables = self.distance_bias(max(key_length, self._bias_length))
            table = tables[layer if self.cfg.per_layer_position_bias else 0]
            return table[..., table.shape[-1] - key_length:]  # (1, H, 1, Tk), a view
        return super().step_bias(layer, query_length, key_length, offset)

    def cross_key_value(self, encoder_hidden: Tensor) -> tuple[Tensor, Tensor]:
        batch, length, _ = encoder_hidden.shape
        layers, heads, d_kv = len(self.blocks), self.cfg.num_heads, self.cfg.d_kv
        projected = self.cross_kv(encoder_hidden)  # (B, S, L * 2 * H * d_kv)
        projected = projected.view(batch, length, layers, 2, heads, d_kv).permute(3, 2, 0, 4, 1, 5)
        return projected[0].contiguous(), projected[1].contiguous()  # 2 x (L, B, H, S, d_kv)


def loop_threads() -> int | None:
    """Intra-op threads for ``generate`` outside the LM head (the head keeps torch's).

    Outside the head, a decoding step is ~50 tiny matrix products and ~500
    small ops (plus the token choice), and the encoder of a short input is
    little more; each parallel region costs a thread hand-off that exceeds its
    work, and on a busy machine the hand-off waits for a descheduled thread.
    Measured on a shared 2-core CPU (load average ~6): a 20 us attention call
    took 4-12 ms on two threads and 9 us on one; the mt5-small encoder of 32
    tokens 1.5 s against 34 ms (8 rows: 0.8-2.6 s against 0.2 s); greedy
    decoding 6-8 s against 2.3-3.3 s. The head, ~0.5 GB of weights per step,
    uses every thread. ``MT5FN_DECODE_LOOP_THREADS`` overrides (0: leave
    torch's setting everywhere).
    """
    value = os.environ.get("MT5FN_DECODE_LOOP_THREADS", "1")
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"MT5FN_DECODE_LOOP_THREADS must be an int, got {value!r}") from None
    return count if count > 0 else None


# ------------------------------------------------------------------ memoisation
_LAST: dict = {}


def clear_prepared() -> None:
    """Forget the remembered prepared decoder (frees its weight copies)."""
    _LAST.clear()


def _fingerprint(params: dict) -> tuple:
    return tuple((id(leaf), leaf._version) for leaf in iter_leaves(params))


def prepared_decoder(params: dict, cfg: MT5Config, rows: int, max_length: int) -> PreparedDecoder:
    """A ``PreparedDecoder`` for ``params``, reused while no weight changed (identity and version).

    One model is remembered at a time (its copies can be as large as the model);
    ``clear_prepared()`` forgets it.
    """
    key = (cfg, rows, _fingerprint(params))
    refs = _LAST.get("refs")
    if _LAST.get("key") == key and refs is not None and all(ref() is not None for ref in refs):
        _LAST["value"]._bias_length = max_length
        return _LAST["value"]
    clear_prepared()  # drop the old copies before making new ones: they can be large
    value = PreparedDecoder(params, cfg, rows)
    value._bias_length = max_length
    _LAST.update(key=key, value=value, refs=[weakref.ref(leaf) for leaf in iter_leaves(params)])
    return value
