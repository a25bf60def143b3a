"""Published shapes of the public T5-family checkpoints, for ``MT5Config.preset``.

Each entry is ``(d_model, d_ff, d_kv, num_heads, num_layers)``; vocabulary,
feed-forward kind and head tying follow the family. Shapes are those of the
Hugging Face hub configs of the named checkpoints.
"""

from __future__ import annotations

from typing import Any

_SIZES = {
    # T5 v1.0: relu FFN, tied head (output scaled), 32128 vocabulary.
    "t5-small": (512, 2048, 64, 8, 6),
    "t5-base": (768, 3072, 64, 12, 12),
    "t5-large": (1024, 4096, 64, 16, 24),
    "t5-3b": (1024, 16384, 128, 32, 24),
    "t5-11b": (1024, 65536, 128, 128, 24),
    # T5 v1.1 / FLAN-T5 / mT5 / UMT5 share the gated-gelu shapes.
    "small": (512, 1024, 64, 6, 8),
    "base": (768, 2048, 64, 12, 12),
    "large": (1024, 2816, 64, 16, 24),
    "xl": (2048, 5120, 64, 32, 24),
    "xxl": (4096, 10240, 64, 64, 24),
}


def _entry(model_type: str, vocab: int, size: tuple[int, ...], ffn: str, tied: bool) -> dict[str, Any]:
    d_model, d_ff, d_kv, heads, layers = size
    return dict(model_type=model_type, vocab_size=vocab, d_model=d_model, d_ff=d_ff, d_kv=d_kv,
                num_heads=heads, num_layers=layers, num_decoder_layers=layers,
                feed_forward_proj=ffn, tie_word_embeddings=tied)


PRESETS: dict[str, dict[str, Any]] = {}
for _name in ("t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b"):
    PRESETS[_name] = _entry("t5", 32128, _SIZES[_name], "relu", True)
for _size in ("small", "base", "large", "xl", "xxl"):
    PRESETS[f"t5-v1_1-{_size}"] = _entry("t5", 32128, _SIZES[_size], "gated-gelu", False)
    PRESETS[f"flan-t5-{_size}"] = _entry("t5", 32128, _SIZES[_size], "gated-gelu", False)
    PRESETS[f"mt5-{_size}"] = _entry("mt5", 250112, _SIZES[_size], "gated-gelu", False)
for _size in ("small", "base", "xl", "xxl"):
    PRESETS[f"umt5-{_size}"] = _entry("umt5", 256384, _SIZES[_size], "gated-gelu", False)
