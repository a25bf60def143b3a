"""Block-level pure functions of the T5 family, on one weight form.

Each takes its own slice of the parameter pytree and plain tensors and returns
tensors; none holds state, and none imports the model room: a block reads the
few config fields it needs (``BlockConfig``). The model-level functions in
``mt5fn`` compose them. Read in this order: ``_norm``, ``_position``,
``_masks``, ``_attention``, ``_ffn``, ``_blocks`` (``mt5fn/reference.py`` has
the same math in one file).

Every matrix product goes through ``mt5fn.kernels`` (``linear``, ``project``),
which knows each weight-leaf form; the kernel names are re-exported here
because blocks and callers have always reached them as ``functional.linear``.
"""

from ..kernels import (IGNORE_INDEX, fused_loss_applies, linear, linear_cross_entropy, linear_dtype, linear_form,
                       linear_shape)
from ._attention import (KeyValueUpdate, attend, attention, attention_probabilities, attention_weights,
                         project_key_value, split_heads)
from ._blocks import BlockConfig, attention_sublayer, decoder_block, encoder_block, feed_forward_sublayer
from ._dropout import clamp_half, dropout
from ._ffn import ACTIVATION_FUNCTIONS, feed_forward
from ._masks import PositionConfig, causal_bias, padding_bias, self_attention_bias
from ._norm import rms_norm
from ._position import position_bias, relative_position_bucket

__all__ = [
    "ACTIVATION_FUNCTIONS", "BlockConfig", "IGNORE_INDEX", "KeyValueUpdate", "PositionConfig", "attend", "attention",
    "attention_probabilities", "attention_sublayer", "attention_weights", "causal_bias", "clamp_half",
    "decoder_block", "dropout", "encoder_block", "feed_forward", "feed_forward_sublayer", "fused_loss_applies",
    "linear", "linear_cross_entropy", "linear_dtype", "linear_form", "linear_shape", "padding_bias",
    "position_bias", "project_key_value", "relative_position_bucket", "rms_norm", "self_attention_bias",
    "split_heads",
]
