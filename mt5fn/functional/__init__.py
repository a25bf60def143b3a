"""Block-level pure functions of the T5 family.

Each takes its own slice of the parameter pytree and plain tensors and returns
tensors; none holds state. The model-level functions in ``mt5fn`` compose them.
Every matrix product goes through ``linear``, which knows each weight-leaf form
(``_linear``'s table).
"""

from ._attention import KeyValueUpdate, Observer, attend, attention, attention_weights, project_key_value, split_heads
from ._blocks import decoder_block, encoder_block
from ._cross_entropy import IGNORE_INDEX, fused_loss_applies, linear_cross_entropy
from ._dropout import clamp_half, dropout
from ._ffn import ACTIVATION_FUNCTIONS, feed_forward
from ._linear import linear, linear_dtype, linear_form, linear_shape
from ._masks import causal_bias, padding_bias, self_attention_bias
from ._norm import rms_norm
from ._position import position_bias, relative_position_bucket

__all__ = [
    "ACTIVATION_FUNCTIONS", "IGNORE_INDEX", "KeyValueUpdate", "Observer", "attend", "attention", "attention_weights",
    "causal_bias", "clamp_half", "decoder_block", "dropout", "encoder_block", "feed_forward", "fused_loss_applies", "linear", "linear_cross_entropy",
    "linear_dtype", "linear_form", "linear_shape", "padding_bias", "position_bias", "project_key_value",
    "relative_position_bucket", "rms_norm", "self_attention_bias", "split_heads",
]
