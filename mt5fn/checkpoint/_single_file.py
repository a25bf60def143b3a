"""Single weight files as diffusion tools ship T5 text encoders (``t5xxl_fp16.safetensors``).

Such a file has no ``config.json`` and names its tensors in one of these ways:

* transformers' names: ``encoder.block.0.layer.0.SelfAttention.q.weight``,
  ``shared.weight`` (or ``encoder.embed_tokens.weight``), possibly decoder too;
* the encoder stack's own names, without ``encoder.``: ``block.0.layer...``,
  ``final_layer_norm.weight``, ``embed_tokens.weight`` (or ``shared.weight``);
* either of these under a prefix, in files that bundle several models
  (``text_encoders.t5xxl.transformer.encoder.block.0...``): the prefix is found
  from the block names, and tensors outside it (the other models) are ignored.

Float8 scales and markers are set aside first (see ``_fp8``). The result maps
transformers' names to the names stored in the file.
"""

from __future__ import annotations

import re

from ._fp8 import scale_names

_ANCHOR = re.compile(r"^(?P<prefix>(?:.*?\.)??)(?P<stack>encoder\.|decoder\.)?block\.\d+\.layer\.\d+\.")
_T5_NAME = re.compile(
    r"^(?:shared\.weight|lm_head\.weight|(?:en|de)coder\.(?:embed_tokens|final_layer_norm)\.weight"
    r"|(?:en|de)coder\.block\.\d+\.layer\.\d+\.(?:"
    r"(?:SelfAttention|EncDecAttention)\.(?:q|k|v|o|relative_attention_bias)"
    r"|DenseReluDense\.(?:wi|wi_0|wi_1|wo)|layer_norm)\.weight)$")
_BARE = (("block.", "encoder.block."), ("final_layer_norm.weight", "encoder.final_layer_norm.weight"),
         ("embed_tokens.weight", "encoder.embed_tokens.weight"))


def hf_names(names: list[str], file: str, shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, str], dict[str, str]]:
    """``({transformers name: stored name}, {transformers weight name: stored scale name})``."""
    scales, ignored = scale_names(names)
    skip = set(ignored) | set(scales.values())
    candidates = [name for name in names if name not in skip]
    anchors = [(name, _ANCHOR.match(name)) for name in candidates]
    prefixes = sorted({match.group("prefix") for _name, match in anchors if match})
    if not prefixes:
        first = candidates[0] if candidates else None
        described = f"its first tensor is {first!r} of shape {shapes[first]}" if first else "it holds no tensors"
        raise ValueError(f"{file}: not a T5 checkpoint: no tensor is named like a T5 block "
                         f"('encoder.block.0.layer.0.SelfAttention.q.weight', with or without 'encoder.'); "
                         f"{described}")
    if len(prefixes) > 1:
        raise ValueError(f"{file}: holds T5 blocks under several prefixes {prefixes}; "
                         "extract one model into its own file")
    prefix = prefixes[0]
    stacked = any(match and match.group("stack") for _name, match in anchors)
    mapping: dict[str, str] = {}
    for name in candidates:
        if not name.startswith(prefix):
            continue  # another model in a bundled file
        rest = name[len(prefix):]
        hf = rest
        if not stacked:
            for old, new in _BARE:
                if rest.startswith(old):
                    hf = new + rest[len(old):]
                    break
        if not _T5_NAME.match(hf):
            raise ValueError(f"{file}: tensor {name!r} (shape {shapes[name]}) does not fit a T5 "
                             f"{'model' if stacked else 'encoder'}; T5 tensors are named like "
                             f"'{prefix}{'encoder.' if stacked else ''}block.0.layer.0.SelfAttention.q.weight'")
        if hf in mapping:
            alias = mapping[hf]
            raise ValueError(f"{file}: tensors {alias!r} and {name!r} are both {hf!r}")
        mapping[hf] = name
    stored = {old: new for new, old in mapping.items()}
    return mapping, {stored[w]: s for w, s in scales.items() if w in stored}
