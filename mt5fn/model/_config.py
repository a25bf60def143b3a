"""MT5Config: one frozen, hashable description of a T5 / mT5 / UMT5 model.

Field names are those of Hugging Face's ``config.json`` so that a real config
file maps onto the dataclass one to one. The config is static data: it is never
part of the parameter pytree, which keeps ``torch.func`` transforms and
``torch.compile`` free of Python objects in the traced inputs.

Two derived facts live here because every other module needs them:

* ``scale_decoder_outputs`` -- whether the decoder output is multiplied by
  ``d_model ** -0.5`` before the LM head (T5 v1.0 yes, v1.1 / mT5 no), resolved
  from the config the way transformers does (see ``docs/design.md``).
* ``activation`` / ``is_gated`` -- parsed from ``feed_forward_proj``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from ..checks import check_bool, check_dropout, check_int, check_real, read_json
from ..functional import ACTIVATION_FUNCTIONS

MODEL_TYPES = ("t5", "mt5", "umt5")

# The integer sizes of a config. Each is at most 2**31 - 1: an int32 id must be able to address every
# token, and no published model comes near (the largest, t5-11b, has d_ff = 65536).
_DIMENSIONS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
               "relative_attention_num_buckets", "relative_attention_max_distance")
MAX_DIMENSION = 2 ** 31 - 1

# Activations transformers accepts in ``feed_forward_proj`` that we implement (one list: functional's).
ACTIVATIONS = tuple(ACTIVATION_FUNCTIONS)

# transformers' dataclass defaults per model_type (configuration_{t5,mt5,umt5}.py).
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "t5": dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
               feed_forward_proj="relu"),
    "mt5": dict(vocab_size=250112, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6,
                feed_forward_proj="gated-gelu"),
    "umt5": dict(vocab_size=250112, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6,
                 feed_forward_proj="gated-gelu"),
}


@dataclasses.dataclass(frozen=True)
class MT5Config:
    """Static hyper-parameters of an encoder-decoder of the T5 family.

    ``num_decoder_layers=None`` means "as many as ``num_layers``", and
    ``decoder_start_token_id=None`` means "``pad_token_id``", as in transformers;
    both are resolved at construction so the stored config is explicit.
    ``scale_decoder_outputs=None`` is resolved from ``model_type`` and
    ``tie_word_embeddings`` (mT5: never; t5/umt5: unless the config says the
    embeddings are untied).

    ``eos_token_id`` may be given as a list, as transformers' configs hold it
    (``[3, 1]``): generation then stops at any of them. The config keeps the
    first as ``eos_token_id`` (an int, for every reader of one id) and all of
    them, in order, as ``eos_token_ids``; ``to_hf`` writes the list back. An
    int ``eos_token_id`` that is not the first of ``eos_token_ids`` (a
    ``replace(eos_token_id=2)``) makes ``eos_token_ids == (2,)``.
    """

    vocab_size: int = 250112
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 1024
    num_layers: int = 8
    num_decoder_layers: int | None = None
    num_heads: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"
    tie_word_embeddings: bool = False
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int | None = None
    model_type: str = "mt5"
    scale_decoder_outputs: bool | None = None
    eos_token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # Every field is checked for type and range here, once: a config that is accepted never fails
        # later (an IndexError from the bucket function, a shape of zero, an id the embedding lacks).
        def fix(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.num_decoder_layers is None:
            fix("num_decoder_layers", self.num_layers)
        for name in _DIMENSIONS:
            check_int(name, getattr(self, name), 1, MAX_DIMENSION)
        buckets, distance = self.relative_attention_num_buckets, self.relative_attention_max_distance
        if buckets < 4:
            # Bidirectional attention halves the buckets, then halves again for the exact region.
            raise ValueError(f"relative_attention_num_buckets must be >= 4, got {buckets!r}")
        if distance <= buckets // 2:
            # The log-spaced buckets span (max_exact, max_distance]; the causal stack's exact region is
            # num_buckets // 2 wide. At max_distance == max_exact the bucket formula divides by log(1) = 0,
            # below it the buckets run negative: transformers then fails with an IndexError on any input
            # longer than the exact region.
            raise ValueError(f"relative_attention_max_distance must be > relative_attention_num_buckets // 2 "
                             f"= {buckets // 2}, got {distance!r}")
        check_int("pad_token_id", self.pad_token_id, 0, self.vocab_size - 1)
        if self.decoder_start_token_id is None:
            fix("decoder_start_token_id", self.pad_token_id)
        eos, ids = self.eos_token_id, self.eos_token_ids
        if isinstance(eos, (list, tuple)):  # transformers' list form: stop at any of them
            if not eos:
                raise ValueError("eos_token_id is an empty list")
            ids, eos = tuple(eos), eos[0]
        elif ids is not None:
            check_int("eos_token_id", eos, 0, self.vocab_size - 1)  # before comparing (1.0 == 1)
            if not isinstance(ids, (list, tuple)) or not ids:
                raise ValueError(f"eos_token_ids must be a non-empty tuple of ids, got {ids!r}")
            ids = tuple(ids) if ids[0] == eos else (eos,)
        else:
            ids = (eos,)
        for index, value in enumerate(ids):
            check_int(f"eos_token_id[{index}]" if len(ids) > 1 else "eos_token_id", value, 0, self.vocab_size - 1)
        fix("eos_token_id", int(eos))
        fix("eos_token_ids", tuple(int(value) for value in ids))
        check_int("decoder_start_token_id", self.decoder_start_token_id, 0, self.vocab_size - 1)
        fix("dropout_rate", check_dropout(self.dropout_rate))
        eps = check_real("layer_norm_epsilon", self.layer_norm_epsilon)
        if not eps > 0.0:
            raise ValueError(f"layer_norm_epsilon must be a positive finite float, got {eps!r}")
        fix("layer_norm_epsilon", eps)
        check_bool("tie_word_embeddings", self.tie_word_embeddings)
        _parse_feed_forward_proj(self.feed_forward_proj)
        if self.scale_decoder_outputs is None:
            fix("scale_decoder_outputs", self.model_type != "mt5" and self.tie_word_embeddings)
        elif not isinstance(self.scale_decoder_outputs, bool):
            raise ValueError(f"scale_decoder_outputs must be a bool or None, got {self.scale_decoder_outputs!r}")
        elif self.scale_decoder_outputs and self.model_type == "mt5":
            raise ValueError("scale_decoder_outputs must be False for model_type 'mt5' (transformers' mT5 never "
                             "rescales the decoder output); use model_type 't5' for a scaled head")

    # ------------------------------------------------------------------ derived
    @property
    def is_gated(self) -> bool:
        """True for the gated FFN ``act(x W0) * (x W1)`` of T5 v1.1 / mT5 / UMT5."""
        return _parse_feed_forward_proj(self.feed_forward_proj)[0]

    @property
    def activation(self) -> str:
        """Activation name as transformers' ``dense_act_fn`` (``gated-gelu`` -> ``gelu_new``)."""
        return _parse_feed_forward_proj(self.feed_forward_proj)[1]

    @property
    def inner_dim(self) -> int:
        """Width of the attention projections, ``num_heads * d_kv`` (need not equal ``d_model``)."""
        return self.num_heads * self.d_kv

    @property
    def per_layer_position_bias(self) -> bool:
        """UMT5 gives every block its own relative-position table; T5 / mT5 share block 0's."""
        return self.model_type == "umt5"

    def replace(self, **changes: Any) -> "MT5Config":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- HF interop
    @classmethod
    def from_hf(cls, config: Mapping[str, Any] | str | os.PathLike) -> "MT5Config":
        """Build from a transformers ``config.json`` (a dict, the file, or its directory).

        Keys mt5fn does not use are ignored; absent fields take transformers'
        defaults for that ``model_type``. Flags are read as transformers 5.24
        reads them: ``tie_word_embeddings`` is "tied unless it is exactly
        ``false``" (so ``0`` and ``"false"`` read as tied), a stored
        ``scale_decoder_outputs`` counts by its truth value for t5 / umt5, and
        mT5 never scales. An error names the file it came from.
        """
        source = "config"
        if not isinstance(config, Mapping):
            if not isinstance(config, (str, os.PathLike)):
                raise TypeError(f"config must be a dict, a config.json path or its directory, "
                                f"got {type(config).__name__}")
            path = os.fspath(config)
            source = os.path.join(path, "config.json") if os.path.isdir(path) else path
            config = read_config_json(source)
        try:
            return cls(**_hf_values(cls, config))
        except (TypeError, ValueError) as error:
            raise type(error)(f"{source}: {error}") from None

    def to_hf(self) -> dict[str, Any]:
        """A ``config.json`` dict that transformers loads into the same model."""
        architectures = {"t5": "T5ForConditionalGeneration", "mt5": "MT5ForConditionalGeneration",
                         "umt5": "UMT5ForConditionalGeneration"}
        out = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        out.update(architectures=[architectures[self.model_type]], is_encoder_decoder=True,
                   use_cache=True, initializer_factor=1.0)
        if self.model_type == "mt5":
            out.pop("scale_decoder_outputs")  # mT5 never scales; transformers' MT5Config has no such field
        ids = out.pop("eos_token_ids")
        if len(ids) > 1:
            out["eos_token_id"] = list(ids)
        return out

    @classmethod
    def preset(cls, name: str) -> "MT5Config":
        """Published shapes: ``mt5-{small,base,large,xl,xxl}``, ``t5-{small,base,large}``,
        ``t5-v1_1-{small,base,large,xl,xxl}``, ``umt5-{small,base,xl,xxl}``."""
        from ._presets import PRESETS

        key = name.split("/")[-1].removeprefix("google-").lower()
        if key not in PRESETS:
            raise ValueError(f"name: unknown preset {name!r}; known: {sorted(PRESETS)}")
        return cls(**PRESETS[key])


def _hf_values(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments a transformers config dict means."""
    model_type = config.get("model_type", "t5")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    values: dict[str, Any] = dict(_HF_DEFAULTS[model_type])
    values.update(relative_attention_num_buckets=32, relative_attention_max_distance=128,
                  dropout_rate=0.1, layer_norm_epsilon=1e-6, pad_token_id=0, eos_token_id=1)
    names = {field.name for field in dataclasses.fields(cls)}
    for key, value in config.items():
        if key in names and value is not None:
            values[key] = value
    values["model_type"] = model_type
    # transformers treats an absent flag as tied (and T5 v1.0 hub configs omit it).
    tied = config.get("tie_word_embeddings", True) is not False
    values["tie_word_embeddings"] = tied
    values.pop("eos_token_ids", None)  # not a transformers field: a list in eos_token_id says it
    stored = config.get("scale_decoder_outputs")
    if model_type == "mt5":
        values["scale_decoder_outputs"] = False  # MT5ForConditionalGeneration never reads the flag
    elif stored is None:
        values["scale_decoder_outputs"] = tied
    else:
        values["scale_decoder_outputs"] = bool(stored)  # transformers tests it with a plain ``if``
    return values


def read_config_json(file: str) -> dict[str, Any]:
    """The ``config.json`` object in ``file``; errors name the file and the problem."""
    return read_json(file, missing="a checkpoint directory needs config.json")


def _parse_feed_forward_proj(value: Any) -> tuple[bool, str]:
    if not isinstance(value, str):
        raise ValueError(f"feed_forward_proj must be a string like 'relu' or 'gated-gelu', got {value!r}")
    parts = value.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ValueError(f"feed_forward_proj must be 'ACT' or 'gated-ACT', got {value!r}")
    gated, act = len(parts) == 2, parts[-1]
    if value == "gated-gelu":
        act = "gelu_new"  # transformers' historical alias: mT5 / v1.1 use the tanh approximation
    if act not in ACTIVATIONS:
        raise ValueError(f"feed_forward_proj: unsupported activation {act!r} in {value!r}; "
                         f"supported: {ACTIVATIONS}")
    return gated, act


def check_config(cfg: Any) -> MT5Config:
    """``cfg`` is an ``MT5Config`` (its fields were validated when it was made); else ``TypeError``."""
    if not isinstance(cfg, MT5Config):
        raise TypeError(f"cfg must be an MT5Config, got {type(cfg).__name__}")
    return cfg
