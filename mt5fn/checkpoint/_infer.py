"""An ``MT5Config`` from tensor shapes alone, for weight files that come without one.

What the shapes show: the vocabulary and ``d_model`` (embedding), the depth
(block count per stack), ``num_heads`` and the bucket count (the position
table, ``(buckets, heads)``), ``d_kv`` (``q`` rows / heads), ``d_ff`` and
whether the FFN is gated (``wi_0`` / ``wi_1`` or ``wi``), UMT5 (a position
table in every block) and an untied head (``lm_head.weight``).

What they cannot show, and is assumed and stated in a warning: the
activation (``gated-gelu``, the tanh GELU of T5 v1.1 / mT5 / UMT5 and of every
T5 text encoder in diffusion models, or ``relu`` when not gated),
``layer_norm_epsilon`` = 1e-6 and ``relative_attention_max_distance`` = 128.
mT5 is told from T5 by its 250112-row vocabulary; the encoders compute the
same either way.
"""

from __future__ import annotations

import re
from typing import Mapping

from ..model._config import MT5Config

_BLOCK = re.compile(r"^(encoder|decoder)\.block\.(\d+)\.")
_BIAS = "layer.0.SelfAttention.relative_attention_bias.weight"


def infer_config(shapes: Mapping[str, tuple[int, ...]], file: str) -> tuple[MT5Config, str]:
    """``(config, the assumptions made)``; a tensor whose shape contradicts the others is named."""
    def shape(name: str, rank: int) -> tuple[int, ...]:
        if name not in shapes:
            raise ValueError(f"{file}: cannot infer the config: no tensor {name!r}")
        got = tuple(shapes[name])
        if len(got) != rank or not all(size > 0 for size in got):
            raise ValueError(f"{file}: tensor {name!r} has shape {got}, not the {rank}-D shape a T5 model has there")
        return got

    embed = next((n for n in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
                  if n in shapes), "shared.weight")
    vocab, d_model = shape(embed, 2)
    depth = {"encoder": 0, "decoder": 0}
    for name in shapes:
        match = _BLOCK.match(name)
        if match:
            depth[match.group(1)] = max(depth[match.group(1)], int(match.group(2)) + 1)
    for stack, count in depth.items():
        absent = [i for i in range(count) if f"{stack}.block.{i}.layer.0.SelfAttention.q.weight" not in shapes]
        if absent:
            raise ValueError(f"{file}: {stack} block {absent[0]} is missing (blocks go up to {count - 1}); "
                             f"no tensor {stack}.block.{absent[0]}.layer.0.SelfAttention.q.weight")
    buckets, heads = shape(f"encoder.block.0.{_BIAS}", 2)
    inner, q_in = shape("encoder.block.0.layer.0.SelfAttention.q.weight", 2)
    if q_in != d_model:
        raise ValueError(f"{file}: tensor 'encoder.block.0.layer.0.SelfAttention.q.weight' has shape {(inner, q_in)}"
                         f" but the embedding {embed!r} has width {d_model}")
    if inner % heads:
        raise ValueError(f"{file}: tensor 'encoder.block.0.layer.0.SelfAttention.q.weight' has {inner} rows, "
                         f"not a multiple of the {heads} heads of the position table 'encoder.block.0.{_BIAS}'")
    ffn = "encoder.block.0.layer.1.DenseReluDense"
    gated = f"{ffn}.wi_0.weight" in shapes
    d_ff = shape(f"{ffn}.wi_0.weight" if gated else f"{ffn}.wi.weight", 2)[0]
    umt5 = depth["encoder"] > 1 and f"encoder.block.1.{_BIAS}" in shapes
    model_type = "umt5" if umt5 else "mt5" if vocab == 250112 else "t5"
    values = dict(vocab_size=vocab, d_model=d_model, d_kv=inner // heads, d_ff=d_ff, num_layers=depth["encoder"],
                  num_decoder_layers=depth["decoder"] or depth["encoder"], num_heads=heads,
                  relative_attention_num_buckets=buckets, relative_attention_max_distance=128,
                  layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu" if gated else "relu",
                  tie_word_embeddings="lm_head.weight" not in shapes, model_type=model_type, dropout_rate=0.1)
    try:
        cfg = MT5Config(**values)
    except ValueError as error:
        raise ValueError(f"{file}: the tensor shapes give no valid config ({error})") from None
    assumed = (f"feed_forward_proj={values['feed_forward_proj']!r}, layer_norm_epsilon=1e-06, "
               f"relative_attention_max_distance=128")
    return cfg, assumed
