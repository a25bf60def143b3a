"""The one validation layer of the public boundary, safe under ``vmap``, ``grad`` and ``torch.compile``.

Every public function of the model, decoding and checkpoint rooms (and every
command line, through its options) runs these checks before any work, so a
malformed call ends here with a ``ValueError`` or ``TypeError`` whose message
names the argument (and the pytree path or field) and the offending value --
never with an ``IndexError``, a ``KeyError`` or a kernel error from deep
inside. The property is stated and fuzzed in ``spec/test_boundary_fuzz.py``.

Shape, dtype and device checks read only tensor metadata and always run.
Value checks (token ids in range) need ``bool()`` on a tensor, which a
transform or a compiler cannot do, so they run only on plain eager tensors --
the case where a bad id would otherwise surface as an ``IndexError`` from deep
inside ``embedding``.

Numeric options are finite and inside ranges whose results do not overflow
(``check_scale``, ``check_length_penalty``). The memory a call would allocate
is bounded separately, in ``_preflight``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..functional import IGNORE_INDEX, linear_dtype, linear_form, linear_shape
from ..functional._transforms import is_plain_eager

if TYPE_CHECKING:
    from ._config import MT5Config

__all__ = ["IGNORE_INDEX", "is_plain_eager"]

# Floating dtypes a parameter leaf may have; token ids are int64 (torch's default) or int32 (what
# ``embedding`` also accepts). Other integer dtypes are refused rather than cast: a uint8 or int16 id
# tensor is almost always a mistake (a byte buffer, a mask), not a batch of tokens.
PARAM_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
ID_DTYPES = (torch.int64, torch.int32)

# Multiplicative score settings (temperature, repetition penalty) must lie in [1e-15, 1e15]: the decoding
# loops divide / multiply float32 scores by both, so together they scale a score by at most 1e30, and a
# score up to 1e8 in magnitude stays finite (float32 max is 3.4e38). Outside, temperature=1e-45 turns
# every positive logit into +inf and the softmax into NaN (torch.multinomial then fails), and
# repetition_penalty=1e-300 does the same to the tokens already generated.
SCALE_RANGE = (1e-15, 1e15)
_LOG_FLOAT32_MAX = math.log(torch.finfo(torch.float32).max)  # 88.72...

# torch.Generator.manual_seed takes seeds in [-2**63, 2**64); mt5fn's seeds are the non-negative part.
MAX_SEED = 2 ** 64 - 1


# ------------------------------------------------------------------ plain values
# Every room checks its plain int / real arguments here (``words`` keeps a room's own phrasing of the
# requirement, ``error`` its ValueError subclass): one definition of "an int" (a bool is not one) and of
# "a finite number", so no check can disagree with another.
def is_int(value: Any, minimum: int | None = None, maximum: int | None = None) -> bool:
    """``value`` is an ``int`` (not a bool) in ``[minimum, maximum]`` (either bound may be None)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and (minimum is None or value >= minimum) and (maximum is None or value <= maximum))


def is_real(value: Any, *, at_least: float | None = None, above: float | None = None,
            below: float | None = None, at_most: float | None = None) -> bool:
    """``value`` is a finite real number (an int or a float, not a bool) within the bounds given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        as_float = float(value)
    except OverflowError:  # an int beyond float range
        return False
    return (math.isfinite(as_float) and (at_least is None or as_float >= at_least)
            and (above is None or as_float > above) and (below is None or as_float < below)
            and (at_most is None or as_float <= at_most))


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None, *, words: str | None = None,
              error: type[ValueError] = ValueError) -> int:
    """An ``int`` (not a bool) in ``[minimum, maximum]``; else ``error`` says "``name`` must be ``words``"."""
    if not is_int(value, minimum, maximum):
        if words is None:
            words = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
        raise error(f"{name} must be {words}, got {_short(value)}")
    return value


def check_optional_int(name: str, value: Any, minimum: int, maximum: int | None = None, *,
                       words: str | None = None, error: type[ValueError] = ValueError) -> int | None:
    return None if value is None else check_int(name, value, minimum, maximum, words=words, error=error)


def check_real(name: str, value: Any, *, at_least: float | None = None, above: float | None = None,
               below: float | None = None, at_most: float | None = None, words: str | None = None,
               error: type[ValueError] = ValueError) -> float:
    """A finite real number (not a bool) within the bounds given, as a float."""
    if not is_real(value, at_least=at_least, above=above, below=below, at_most=at_most):
        if words is None:
            bounds = [f">= {at_least:g}" if at_least is not None else "", f"> {above:g}" if above is not None else "",
                      f"< {below:g}" if below is not None else "", f"<= {at_most:g}" if at_most is not None else ""]
            words = " ".join(["a finite number", " and ".join(b for b in bounds if b)]).strip()
        raise error(f"{name} must be {words}, got {_short(value)}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {_short(value)}")
    return value


def check_dropout(rate: Any, name: str = "dropout_rate") -> float:
    return check_real(name, rate, at_least=0.0, below=1.0, words="a float in [0, 1)")


def check_scale(name: str, value: Any) -> float:
    """A multiplicative score setting in ``SCALE_RANGE`` (see there for why)."""
    value = check_real(name, value)
    low, high = SCALE_RANGE
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}] (scores are scaled by it in float32 and "
                         f"overflow outside that range), got {value!r}")
    return value


def check_length_penalty(value: Any, max_new_tokens: int | None) -> float:
    """Beam search divides float32 scores by ``length ** length_penalty`` for lengths up to
    ``max_new_tokens``: the power must stay inside float32's range (else it overflows -- Python raises
    ``OverflowError`` -- or underflows to 0 and every finished beam scores -inf)."""
    value = check_real("length_penalty", value)
    if max_new_tokens is not None and max_new_tokens > 1:
        bound = _LOG_FLOAT32_MAX / math.log(max_new_tokens)
        if abs(value) > bound:
            raise ValueError(f"length_penalty must lie in [-{bound:.4g}, {bound:.4g}] for max_new_tokens="
                             f"{max_new_tokens} (length ** length_penalty overflows float32 beyond), "
                             f"got {value!r}")
    return value


def check_seed(name: str, seed: Any) -> int:
    """A seed torch's generators accept: an int in ``[0, 2**64 - 1]``."""
    return check_int(name, seed, 0, MAX_SEED)


def check_rows(rows: Any) -> int | None:
    """The ``rows`` hint of ``prepare_decoding``: None or an int >= 1."""
    return check_optional_int("rows", rows, 1)


def check_device(name: str, device: Any) -> torch.device | None:
    """None or a device string / ``torch.device`` that names a device this build and machine have.

    Refuses up front what torch would refuse late and unclearly (``--device cuda`` on a CPU-only
    build fails with an ``AssertionError`` from inside the first ``.to``)."""
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)) or isinstance(device, bool):
        raise TypeError(f"{name} must be a device string like 'cpu' or 'cuda:0', or a torch.device, "
                        f"got {type(device).__name__}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{name}: {device!r} is not a torch device ({error})") from None
    kind = parsed.type
    if kind in ("cpu", "meta"):
        return parsed
    backend = getattr(torch, kind, None)
    is_available = getattr(backend, "is_available", None)
    if is_available is None or not is_available():
        why = "this torch build has no CUDA" if kind == "cuda" and not torch.backends.cuda.is_built() else \
            f"no {kind} device is available"
        raise ValueError(f"{name}: device {str(parsed)!r} cannot be used ({why})")
    count = getattr(backend, "device_count", lambda: 1)()
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(f"{name}: device {str(parsed)!r} does not exist ({count} {kind} device(s))")
    return parsed


def _short(value: Any) -> str:
    """``repr`` of a value, cut to a readable length (a malformed argument can be huge)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# ------------------------------------------------------------------ config
def check_config(cfg: Any) -> "MT5Config":
    from ._config import MT5Config

    if not isinstance(cfg, MT5Config):
        raise TypeError(f"cfg must be an MT5Config, got {type(cfg).__name__}")
    return cfg


# ------------------------------------------------------------------ the parameter pytree
class _Dtypes:
    """What one traversal learns about the leaves: the compute dtype and device (those of ``shared``)."""

    def __init__(self, shared: Tensor) -> None:
        self.dtype, self.device = shared.dtype, shared.device

    def check(self, path: str, dtype: torch.dtype, device: torch.device, *, may_be_float32: bool = False) -> None:
        if dtype not in PARAM_DTYPES:
            raise TypeError(f"params: {path} has dtype {dtype}; parameters are floating "
                            f"({', '.join(str(d).removeprefix('torch.') for d in PARAM_DTYPES)})")
        # Half-precision models may keep each FFN output projection in float32 (transformers'
        # _keep_in_fp32_modules); every other leaf has the embedding's dtype, or a product fails.
        allowed = {self.dtype} | ({torch.float32} if may_be_float32 else set())
        if dtype not in allowed:
            raise TypeError(f"params: {path} has dtype {dtype} but the embedding 'shared' has {self.dtype}; "
                            "every leaf has one dtype (a half model may keep FFN 'wo' in float32)")
        if device != self.device:
            raise ValueError(f"params: {path} is on {device} but 'shared' is on {self.device}")


def _leaf(path: str, node: Any, shape: tuple[int, ...], seen: _Dtypes | None) -> None:
    """A norm or table: a dense tensor of exactly ``shape``."""
    if not isinstance(node, Tensor):
        raise TypeError(f"params: {path} must be a tensor of shape {shape}, got {type(node).__name__}")
    if node.layout != torch.strided:
        raise TypeError(f"params: {path} must be a dense (strided) tensor, got layout {node.layout}")
    if tuple(node.shape) != shape:
        raise ValueError(f"params: {path} has shape {tuple(node.shape)} but the config needs {shape}")
    if seen is not None:
        seen.check(path, node.dtype, node.device)


def _weight(path: str, node: Any, shape: tuple[int, int], seen: _Dtypes, *, may_be_float32: bool = False) -> None:
    """A projection: any weight-leaf form ``functional.linear`` knows, of logical shape ``shape``.

    Forms that carry their own storage dtype (quantized ones) are checked for shape only."""
    got = linear_shape(node, f"params: {path}")
    if got != shape:
        raise ValueError(f"params: {path} has (out, in) = {got} but the config needs {shape}")
    if isinstance(node, dict) and "int8" in node and (
            node["scale"].requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(node["scale"])):
        raise TypeError(f"params: {path} is an int8 weight leaf: quantized weights are for inference and have "
                        "no gradient (differentiate the float parameters, or use LoRA adapters on them)")
    form = linear_form(node)
    if form == "dense" and node.layout != torch.strided:
        raise TypeError(f"params: {path} must be a dense (strided) tensor, got layout {node.layout}")
    if form in ("dense", "onednn"):
        seen.check(path, node.dtype, node.device, may_be_float32=may_be_float32)
    elif form == "columns":
        blocks = node["columns"]
        dtypes = {block.dtype for block in blocks}
        if len(dtypes) != 1:
            raise TypeError(f"params: {path} has column blocks of several dtypes {sorted(map(str, dtypes))}")
        for index, block in enumerate(blocks):
            seen.check(f"{path}.columns.{index}", linear_dtype(node), block.device, may_be_float32=may_be_float32)
    elif isinstance(node, dict):  # a form with its own storage (int8 + scale): same device as the rest
        for key, part in sorted(node.items()):
            if isinstance(part, Tensor) and part.device != seen.device:
                raise ValueError(f"params: {path}.{key} is on {part.device} but 'shared' is on {seen.device}")


def _keys(path: str, node: Any, allowed: set[str], required: list[set[str]]) -> None:
    """``node`` is a dict with only ``allowed`` keys and one complete key set of ``required``."""
    if not isinstance(node, dict):
        raise TypeError(f"params: {path} must be a dict, got {type(node).__name__}")
    extra = sorted(set(map(str, node)) - allowed)
    if extra:
        raise ValueError(f"params: {path} has unexpected keys {extra}")
    if not any(option <= set(node) for option in required):
        missing = sorted(min(required, key=lambda option: len(option - set(node))) - set(node))
        raise ValueError(f"params: {path} is missing {missing}")


def _attention(path: str, node: Any, cfg: "MT5Config", seen: _Dtypes) -> None:
    d, inner = cfg.d_model, cfg.inner_dim
    _keys(path, node, {"q", "k", "v", "o", "qkv"}, [{"q", "k", "v", "o"}, {"qkv", "o"}])
    for name in ("q", "k", "v"):
        if name in node:
            _weight(f"{path}.{name}", node[name], (inner, d), seen)
    if "qkv" in node:
        _weight(f"{path}.qkv", node["qkv"], (3 * inner, d), seen)
    _weight(f"{path}.o", node["o"], (d, inner), seen)


def _mlp(path: str, node: Any, cfg: "MT5Config", seen: _Dtypes) -> None:
    d, d_ff = cfg.d_model, cfg.d_ff
    inputs = [{"wi_0", "wi_1"}, {"wi_01"}] if cfg.is_gated else [{"wi"}]
    _keys(path, node, {"wi", "wi_0", "wi_1", "wi_01", "wo"}, [option | {"wo"} for option in inputs])
    if cfg.is_gated and "wi" in node:
        raise ValueError(f"params: {path} has 'wi' but the config's feed-forward is gated (wi_0, wi_1)")
    if not cfg.is_gated and ({"wi_0", "wi_1", "wi_01"} & set(node)):
        raise ValueError(f"params: {path} has gated weights {sorted({'wi_0', 'wi_1', 'wi_01'} & set(node))} "
                         f"but the config's feed-forward is {cfg.feed_forward_proj!r} (one 'wi')")
    for name in ("wi", "wi_0", "wi_1"):
        if name in node:
            _weight(f"{path}.{name}", node[name], (d_ff, d), seen)
    if "wi_01" in node:
        _weight(f"{path}.wi_01", node["wi_01"], (2 * d_ff, d), seen)
    _weight(f"{path}.wo", node["wo"], (d, d_ff), seen, may_be_float32=True)


def _stack(name: str, node: Any, cfg: "MT5Config", seen: _Dtypes) -> None:
    decoder = name == "decoder"
    depth = cfg.num_decoder_layers if decoder else cfg.num_layers
    table = (cfg.relative_attention_num_buckets, cfg.num_heads)
    top = {"blocks", "final_norm"} | (set() if cfg.per_layer_position_bias else {"rel_bias"})
    _keys(name, node, top | ({"cross_kv"} if decoder else set()), [top])
    blocks = node["blocks"]
    if not isinstance(blocks, list) or len(blocks) != depth:
        got = f"{len(blocks)} blocks" if isinstance(blocks, list) else type(blocks).__name__
        raise ValueError(f"params: {name}.blocks must be a list of {depth} blocks (the config's depth), got {got}")
    if not cfg.per_layer_position_bias:
        _leaf(f"{name}.rel_bias", node["rel_bias"], table, seen)
    _leaf(f"{name}.final_norm", node["final_norm"], (cfg.d_model,), seen)
    sublayers = (("self_attn", "cross_attn") if decoder else ("attn",))
    norms = {f"{sub}_norm" for sub in sublayers} | {"mlp_norm"}
    keys = norms | set(sublayers) | {"mlp"} | ({"rel_bias"} if cfg.per_layer_position_bias else set())
    for index, block in enumerate(blocks):
        path = f"{name}.blocks.{index}"
        _keys(path, block, keys, [keys])
        for norm in sorted(norms):
            _leaf(f"{path}.{norm}", block[norm], (cfg.d_model,), seen)
        if cfg.per_layer_position_bias:
            _leaf(f"{path}.rel_bias", block["rel_bias"], table, seen)
        for sub in sublayers:
            _attention(f"{path}.{sub}", block[sub], cfg, seen)
        _mlp(f"{path}.mlp", block["mlp"], cfg, seen)
    if decoder and "cross_kv" in node:
        _weight(f"{name}.cross_kv", node["cross_kv"], (depth * 2 * cfg.inner_dim, cfg.d_model), seen)


def check_params(params: Any, cfg: "MT5Config", *, need_decoder: bool = False) -> None:
    """Every part, leaf shape, dtype and device of ``params`` against ``cfg`` (metadata only: safe
    under transforms and while compiling).

    Leaves are floating (``PARAM_DTYPES``), all of ``shared``'s dtype except that FFN ``wo`` may be
    float32, all on ``shared``'s device; projections may be any weight-leaf form
    ``functional.linear_shape`` accepts. ``need_decoder``: the call decodes, so an encoder-only tree
    (``shared`` and ``encoder`` only) is refused.
    """
    if not isinstance(params, dict):
        raise TypeError("params must be the mt5fn parameter pytree (a dict with 'shared', 'encoder', "
                        f"'decoder'), got {type(params).__name__}")
    extra = sorted(set(map(str, params)) - {"shared", "encoder", "decoder", "lm_head"})
    if extra:
        raise ValueError(f"params has unexpected top-level keys {extra}")
    missing = [key for key in ("shared", "encoder") if key not in params]
    if missing:
        raise ValueError(f"params is missing {missing} (a tree from mt5fn.init_params / load_pretrained has "
                         "'shared', 'encoder', 'decoder' and, when untied, 'lm_head')")
    _leaf("shared", params["shared"], (cfg.vocab_size, cfg.d_model), None)
    seen = _Dtypes(params["shared"])
    seen.check("shared", params["shared"].dtype, params["shared"].device)
    _stack("encoder", params["encoder"], cfg, seen)
    if "decoder" in params:
        _stack("decoder", params["decoder"], cfg, seen)
    elif need_decoder:
        raise ValueError("params: the model has no decoder (an encoder-only tree, with 'shared' and 'encoder' "
                         "only); this function needs the decoder")
    if "lm_head" in params:
        _weight("lm_head", params["lm_head"], (cfg.vocab_size, cfg.d_model), seen)


def params_dtype(params: dict) -> torch.dtype:
    """The compute dtype of a checked tree (that of ``shared``)."""
    return params["shared"].dtype


def params_device(params: dict) -> torch.device:
    return params["shared"].device


# ------------------------------------------------------------------ tensor arguments
def check_ids(name: str, ids: Any, cfg: "MT5Config", *, allow_ignore: bool = False, min_batch: int = 0,
              device: torch.device | None = None) -> Tensor:
    """Token ids: an int64 / int32 (B, T) tensor, T >= 1, values in ``[0, vocab_size)`` (or -100 for labels).

    ``min_batch``: the fewest rows the call can take (``generate`` needs one); ``device``: where the
    parameters are (the ids must be there too).
    """
    if not isinstance(ids, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype not in ID_DTYPES:
        kind = "integer token ids" if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool \
            else "token ids as int64 or int32"
        raise TypeError(f"{name} must hold {kind}, got dtype {ids.dtype}")
    if ids.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {ids.layout}")
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, length), got shape {tuple(ids.shape)}")
    if ids.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one token per row, got shape {tuple(ids.shape)}")
    if ids.shape[0] < min_batch:
        raise ValueError(f"{name} must hold at least one row (an empty batch has nothing to decode), "
                         f"got shape {tuple(ids.shape)}")
    if device is not None and ids.device != device:
        raise ValueError(f"{name} is on {ids.device} but the parameters are on {device}")
    if is_plain_eager(ids) and ids.numel():
        valid = (ids >= 0) & (ids < cfg.vocab_size)
        if allow_ignore:
            valid |= ids == IGNORE_INDEX
        if not bool(valid.all()):
            bad = int(ids[~valid][0])
            extra = f" (or {IGNORE_INDEX} to ignore)" if allow_ignore else ""
            raise ValueError(f"{name} must lie in [0, vocab_size={cfg.vocab_size}){extra}, got value {bad}")
    return ids


def check_mask(name: str, mask: Any, ids: Tensor, ids_name: str) -> Tensor | None:
    """A (B, T) mask matching its ids, on their device; nonzero keeps a position."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype.is_complex:
        raise TypeError(f"{name} must be bool, integer or float, got dtype {mask.dtype}")
    if mask.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {mask.layout}")
    if tuple(mask.shape) != tuple(ids.shape):
        raise ValueError(f"{name} must have the shape of {ids_name} {tuple(ids.shape)}, "
                         f"got shape {tuple(mask.shape)}")
    if mask.device != ids.device:
        raise ValueError(f"{name} is on {mask.device} but {ids_name} is on {ids.device}")
    return mask


def check_same_batch(name: str, ids: Tensor, other: Tensor, other_name: str) -> None:
    if ids.shape[0] != other.shape[0]:
        raise ValueError(f"{name} has batch size {ids.shape[0]} but {other_name} has {other.shape[0]}")


def check_hidden(name: str, hidden: Any, cfg: "MT5Config", params: dict | None = None) -> Tensor:
    """Encoder output: a (B, S, d_model) floating tensor, S >= 1; with ``params``, of their dtype and device."""
    if not isinstance(hidden, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(hidden).__name__}")
    if not hidden.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor (the encoder output), got dtype {hidden.dtype}")
    if hidden.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {hidden.layout}")
    if hidden.dim() != 3 or hidden.shape[-1] != cfg.d_model:
        raise ValueError(f"{name} must have shape (batch, length, d_model={cfg.d_model}), "
                         f"got shape {tuple(hidden.shape)}")
    if hidden.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one position per row, got shape {tuple(hidden.shape)}")
    if params is not None:
        if hidden.dtype != params_dtype(params):
            raise TypeError(f"{name} has dtype {hidden.dtype} but the parameters have {params_dtype(params)}")
        if hidden.device != params_device(params):
            raise ValueError(f"{name} is on {hidden.device} but the parameters are on {params_device(params)}")
    return hidden


def check_generator(generator: Any, device: torch.device | None = None) -> torch.Generator | None:
    """None or a ``torch.Generator`` (on ``device``'s type, where sampling draws)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if device is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but decoding runs on {device}")
    return generator


def check_cache_tensors(cache: Any, cfg: "MT5Config", params: dict) -> None:
    """The tensors of a decoding cache (``decoding.DecodeCache``) against the config and the parameters:
    self K/V (L, B, H, M, d_kv), cross K/V (L, B, H, S, d_kv), cross_bias (B, 1, 1, S), a 0-d integer
    position; K/V and bias in the parameters' dtype and on their device."""
    fields = ("self_key", "self_value", "cross_key", "cross_value", "cross_bias", "position")
    for field in fields:
        if not isinstance(getattr(cache, field, None), Tensor):
            raise TypeError(f"cache.{field} must be a tensor, got {type(getattr(cache, field, None)).__name__}; "
                            "make caches with mt5fn.init_cache")
    self_key, cross_key = cache.self_key, cache.cross_key
    expected = (cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv)
    for field in fields[:4]:
        tensor = getattr(cache, field)
        if tensor.dim() != 5:
            raise ValueError(f"cache.{field} must have shape (layers, batch, heads, length, d_kv), "
                             f"got shape {tuple(tensor.shape)}")
        got = (tensor.shape[0], tensor.shape[2], tensor.shape[4])
        if got != expected:
            raise ValueError(f"cache has (layers, heads, d_kv) = {got} but the config has {expected}")
    if cache.self_value.shape != self_key.shape:
        raise ValueError(f"cache.self_value has shape {tuple(cache.self_value.shape)} but cache.self_key has "
                         f"{tuple(self_key.shape)}")
    if cache.cross_value.shape != cross_key.shape or cross_key.shape[1] != self_key.shape[1]:
        raise ValueError(f"cache.cross_key / cross_value have shapes {tuple(cross_key.shape)} / "
                         f"{tuple(cache.cross_value.shape)}, not (layers, {self_key.shape[1]}, heads, S, d_kv)")
    bias_shape = (self_key.shape[1], 1, 1, cross_key.shape[3])
    if tuple(cache.cross_bias.shape) != bias_shape:
        raise ValueError(f"cache.cross_bias must have shape {bias_shape}, got {tuple(cache.cross_bias.shape)}")
    if cache.position.dim() != 0 or cache.position.dtype not in ID_DTYPES:
        raise ValueError(f"cache.position must be a 0-d int64 tensor, got shape {tuple(cache.position.shape)} "
                         f"dtype {cache.position.dtype}")
    dtype, device = params_dtype(params), params_device(params)
    for field in fields:
        tensor = getattr(cache, field)
        if field != "position" and tensor.dtype != dtype:
            raise TypeError(f"cache.{field} has dtype {tensor.dtype} but the parameters have {dtype}")
        if tensor.device != device:
            raise ValueError(f"cache.{field} is on {tensor.device} but the parameters are on {device}")
