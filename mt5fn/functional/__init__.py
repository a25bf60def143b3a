"""Block-level pure functions of the T5 family.

Each takes its own slice of the parameter pytree and plain tensors and returns
tensors; none holds state. The model-level functions in ``mt5fn`` compose them.
"""

from ._attention import attend, attention, project_key_value, split_heads
from ._blocks import decoder_block, encoder_block
from ._dropout import clamp_half, dropout
from ._ffn import ACTIVATION_FUNCTIONS, feed_forward
from ._norm import rms_norm
from ._position import position_bias, relative_position_bucket

__all__ = [
    "ACTIVATION_FUNCTIONS", "attend", "attention", "clamp_half", "decoder_block", "dropout",
    "encoder_block", "feed_forward", "position_bias", "project_key_value", "relative_position_bucket",
    "rms_norm", "split_heads",
]
