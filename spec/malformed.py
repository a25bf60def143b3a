"""Hypothesis strategies of well-formed and malformed calls to mt5fn's public boundary.

A *call* is a public function and its keyword arguments. ``well_formed_calls``
draws calls that follow the documented contract, spread over tiny models of
the whole family (``spec.strategies.configs``), float32 and float64
parameters, int64 and int32 ids, bool / int / float masks, every decoding mode
and the edges of every numeric range. ``malformed_calls`` draws one of those
and breaks exactly one thing, recording the argument names the error must
mention. The defects, by kind:

* tensors: wrong dtype (float, bool, complex, int8 / uint8 / int16 ids), wrong
  rank, zero length, ids out of range, batch or shape mismatches, non-tensors,
  sparse layouts;
* parameter pytrees: not a dict, a part or a leaf missing, an extra key, a
  leaf of the wrong shape, dtype or type, a wrong number of blocks, a config
  that does not describe the tree;
* configs: every ``MT5Config`` field given a wrong type, a value out of range,
  NaN or inf, and the degenerate combinations (bucket / distance pairs whose
  buckets run negative, token ids outside the vocabulary, a scaled mT5);
* options: ``NaN``, ``inf``, negative or zero counts, unknown settings, and
  extreme-but-finite generation settings (``temperature=1e-45``,
  ``repetition_penalty=1e-300``, ``length_penalty=5000``) whose arithmetic
  overflows;
* resources: buffers no machine holds (``max_new_tokens=10**12``, a
  ``max_length=10**12`` cache, a 10**6-token input);
* state dicts: missing, unexpected, mis-shaped, non-tensor and integer
  entries; tokenizers: non-text, lone surrogates, bad ids and options,
  corrupt model bytes and binary config files.

Every example builds its own model (a few milliseconds), so no call sees
another's state.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
from typing import Any, Callable

import torch
from hypothesis import strategies as st

import mt5fn
from spec.strategies import configs

BAD_SCALARS = (float("nan"), float("inf"), -float("inf"))
LOG_FLOAT32_MAX = math.log(torch.finfo(torch.float32).max)


class Call:
    """``fn(**kwargs)``; for a malformed call, ``names`` lists the words the error must contain (one
    suffices) and ``defect`` says what was broken. (A plain class: Hypothesis prints its short repr.)"""

    def __init__(self, target: str, fn: Callable[..., Any], kwargs: dict, names: tuple[str, ...] = (),
                 defect: str = "") -> None:
        self.target, self.fn, self.kwargs, self.names, self.defect = target, fn, kwargs, names, defect

    def run(self) -> Any:
        return self.fn(**self.kwargs)

    def __repr__(self) -> str:
        def show(value: Any) -> str:
            if isinstance(value, torch.Tensor):
                return f"Tensor{tuple(value.shape)}:{str(value.dtype).removeprefix('torch.')}"
            if isinstance(value, dict) and "shared" in value:
                return "<params>"
            if isinstance(value, dict) and any(isinstance(item, torch.Tensor) for item in value.values()):
                return f"<dict of {len(value)} tensors>"
            text = repr(value)
            return text if len(text) < 60 else text[:57] + "..."

        args = ", ".join(f"{key}={show(value)}" for key, value in self.kwargs.items())
        return f"Call({self.target}: {self.defect or 'well-formed'}; {args})"


# ------------------------------------------------------------------ a tiny world per example
@dataclasses.dataclass
class World:
    cfg: mt5fn.MT5Config
    params: dict
    input_ids: torch.Tensor  # (B, S)
    attention_mask: torch.Tensor | None  # (B, S)
    decoder_input_ids: torch.Tensor  # (B, T)
    decoder_attention_mask: torch.Tensor | None  # (B, T)
    labels: torch.Tensor  # (B, T) with -100s
    form: str = "plain"  # the weight-leaf forms: "plain", "int8", "prepared" or "int8-prepared"


@st.composite
def _mask(draw, batch: int, length: int, *, keep_first: bool = False) -> torch.Tensor | None:
    """None or a (B, L) keep-mask with a kept token per row (position 0 kept for decoder masks)."""
    if draw(st.booleans()):
        return None
    rows = [[draw(st.integers(0, 1)) for _ in range(length)] for _ in range(batch)]
    for row in rows:
        row[0 if keep_first else draw(st.integers(0, length - 1))] = 1
    mask = torch.tensor(rows, dtype=torch.long).reshape(batch, length)
    return mask.to(draw(st.sampled_from([torch.long, torch.bool, torch.float32, torch.int32])))


@st.composite
def worlds(draw, *, min_batch: int = 1) -> World:
    """A tiny config, parameters (float32 or float64) and a batch with int64 or int32 ids."""
    cfg = draw(configs())
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float64, torch.bfloat16, torch.float16]))
    params = mt5fn.init_params(cfg, seed=draw(st.integers(0, 99)), dtype=dtype)
    form = draw(st.sampled_from(["plain", "plain", "int8", "prepared", "int8-prepared"]))
    if dtype != torch.float32:
        form = "plain"
    if form != "plain":  # the weight-leaf forms inference takes everywhere
        if form.startswith("int8"):
            params = mt5fn.quantize(params, cfg, "int8")
        if form.endswith("prepared"):
            params = mt5fn.prepare_decoding(params, cfg)
    batch, source, target = draw(st.integers(min_batch, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    id_dtype = draw(st.sampled_from([torch.long, torch.int32]))

    def ids(length: int) -> torch.Tensor:
        values = [[draw(st.integers(0, cfg.vocab_size - 1)) for _ in range(length)] for _ in range(batch)]
        return torch.tensor(values, dtype=id_dtype).reshape(batch, length)

    labels = ids(target)
    if batch and draw(st.booleans()):
        labels[draw(st.integers(0, batch - 1)), -1] = -100
    return World(cfg, params, ids(source), draw(_mask(batch, source)), ids(target),
                 draw(_mask(batch, target, keep_first=True)), labels, form)


# ------------------------------------------------------------------ well-formed calls
@st.composite
def generation_options(draw, vocab_size: int) -> dict:
    """Keyword settings of ``generate`` inside every documented range, edges included."""
    num_beams = draw(st.integers(1, 3))
    do_sample = draw(st.booleans())
    if num_beams > 1:
        returns = draw(st.integers(1, num_beams))
    else:
        returns = draw(st.integers(1, 2)) if do_sample else 1
    max_new_tokens = draw(st.integers(1, 4))
    options = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=do_sample,
                   num_return_sequences=returns, min_new_tokens=draw(st.integers(0, 5)),
                   no_repeat_ngram_size=draw(st.integers(0, 3)),
                   early_stopping=draw(st.sampled_from([True, False, "never"])))
    scale = st.one_of(st.sampled_from([1e-15, 1e-3, 1.0, 1e15]), st.floats(0.05, 20.0))
    if draw(st.booleans()):
        options["temperature"] = draw(scale)
    if draw(st.booleans()):
        options["repetition_penalty"] = draw(scale)
    if draw(st.booleans()):
        options["top_k"] = draw(st.integers(1, vocab_size + 5))
    if draw(st.booleans()):
        options["top_p"] = draw(st.one_of(st.just(1.0), st.floats(1e-6, 1.0)))
    if num_beams > 1 and draw(st.booleans()):
        bound = LOG_FLOAT32_MAX / math.log(max_new_tokens) if max_new_tokens > 1 else 1e6
        options["length_penalty"] = draw(st.one_of(st.sampled_from([-bound * 0.999, 0.0, bound * 0.999]),
                                                   st.floats(-3.0, 3.0)))
    return options


def _encode_call(w: World, draw) -> Call:
    return Call("encode", mt5fn.encode, dict(params=w.params, cfg=w.cfg, input_ids=w.input_ids,
                                             attention_mask=w.attention_mask))


def _forward_call(w: World, draw) -> Call:
    kwargs = dict(params=w.params, cfg=w.cfg, input_ids=w.input_ids, decoder_input_ids=w.decoder_input_ids,
                  attention_mask=w.attention_mask, decoder_attention_mask=w.decoder_attention_mask)
    if draw(st.booleans()):
        kwargs.update(dropout_rate=draw(st.floats(0.0, 0.9)), generator=torch.Generator().manual_seed(0),
                      checkpoint_blocks=draw(st.booleans()))
    return Call("forward", mt5fn.forward, kwargs)


def _loss_call(w: World, draw) -> Call:
    kwargs = dict(params=w.params, cfg=w.cfg, input_ids=w.input_ids, labels=w.labels,
                  attention_mask=w.attention_mask, decoder_attention_mask=w.decoder_attention_mask,
                  reduction=draw(st.sampled_from(["mean", "sum"])))
    if draw(st.booleans()):
        kwargs.update(dropout_rate=draw(st.floats(0.0, 0.9)), checkpoint_blocks=draw(st.booleans()))
    return Call("loss", mt5fn.loss, kwargs)


def _generate_call(w: World, draw) -> Call:
    options = draw(generation_options(w.cfg.vocab_size))
    kwargs = dict(params=w.params, cfg=w.cfg, input_ids=w.input_ids, attention_mask=w.attention_mask, **options)
    if options["do_sample"] and draw(st.booleans()):
        kwargs["generator"] = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 32)))
    if draw(st.booleans()):  # the same settings through a GenerationConfig, some repeated as overrides
        kwargs["config"] = mt5fn.GenerationConfig(**options)
        for key in options:
            if draw(st.booleans()):
                del kwargs[key]
    if draw(st.booleans()):  # the encoder output given instead of (or with) the ids
        kwargs["encoder_outputs"] = mt5fn.encode(w.params, w.cfg, w.input_ids, w.attention_mask)
        if draw(st.booleans()):
            kwargs["input_ids"] = None
    if draw(st.booleans()):  # a forced decoder prefix, with or without the start token in front
        prefix = w.decoder_input_ids[:, :draw(st.integers(1, w.decoder_input_ids.shape[1]))].clone()
        prefix[:, 0] = w.cfg.decoder_start_token_id if draw(st.booleans()) else \
            (w.cfg.decoder_start_token_id + 1) % w.cfg.vocab_size
        kwargs["decoder_input_ids"] = prefix
    if not options["num_beams"] > 1 and options["num_return_sequences"] == 1 and draw(st.booleans()):
        kwargs.pop("config", None)
        kwargs.update({key: value for key, value in options.items()})
        return Call("stream", lambda **kw: list(mt5fn.stream(**kw)), kwargs)
    if draw(st.booleans()):
        kwargs["output_scores"] = True
        kwargs.pop("config", None)
        kwargs.update(options)
    return Call("generate", mt5fn.generate, kwargs)


def _decode_call(w: World, draw) -> Call:
    hidden = mt5fn.encode(w.params, w.cfg, w.input_ids, w.attention_mask)
    return Call("decode", mt5fn.decode, dict(params=w.params, cfg=w.cfg, decoder_input_ids=w.decoder_input_ids,
                                             encoder_hidden=hidden, attention_mask=w.attention_mask,
                                             decoder_attention_mask=w.decoder_attention_mask))


def _score_call(w: World, draw) -> Call:
    return Call("score", mt5fn.score, dict(params=w.params, cfg=w.cfg, input_ids=w.input_ids, labels=w.labels,
                                           attention_mask=w.attention_mask,
                                           decoder_attention_mask=w.decoder_attention_mask))


def _intermediates_call(w: World, draw) -> Call:
    return Call("intermediates", mt5fn.intermediates,
                dict(params=w.params, cfg=w.cfg, input_ids=w.input_ids, decoder_input_ids=w.decoder_input_ids,
                     attention_mask=w.attention_mask, decoder_attention_mask=w.decoder_attention_mask))


def _init_cache_call(w: World, draw) -> Call:
    hidden = mt5fn.encode(w.params, w.cfg, w.input_ids, w.attention_mask)
    return Call("init_cache", mt5fn.init_cache, dict(params=w.params, cfg=w.cfg, encoder_hidden=hidden,
                                                     encoder_mask=w.attention_mask,
                                                     max_length=draw(st.integers(1, 6))))


def _decode_step_call(w: World, draw) -> Call:
    hidden = mt5fn.encode(w.params, w.cfg, w.input_ids, w.attention_mask)
    max_length = draw(st.integers(1, 6))
    cache = mt5fn.init_cache(w.params, w.cfg, hidden, w.attention_mask, max_length)
    steps = draw(st.integers(1, max_length))
    tokens = w.decoder_input_ids[:, :1].expand(-1, steps).contiguous()  # (B, steps)
    return Call("decode_step", mt5fn.decode_step, dict(params=w.params, cfg=w.cfg, cache=cache, token_ids=tokens,
                                                       inplace=draw(st.booleans())))


def _config_fields(cfg: mt5fn.MT5Config) -> dict:
    return {field.name: getattr(cfg, field.name) for field in dataclasses.fields(cfg)}


def _config_call(w: World, draw) -> Call:
    return Call("MT5Config", mt5fn.MT5Config, _config_fields(w.cfg))


def _state_dict_call(w: World, draw) -> Call:
    return Call("from_hf_state_dict", mt5fn.from_hf_state_dict,
                dict(state_dict=mt5fn.to_hf_state_dict(w.params, w.cfg), cfg=w.cfg))


MODEL_TARGETS: dict[str, Callable[[World, Any], Call]] = {
    "encode": _encode_call, "forward": _forward_call, "loss": _loss_call, "generate": _generate_call,
    "init_cache": _init_cache_call, "decode_step": _decode_step_call, "MT5Config": _config_call,
    "from_hf_state_dict": _state_dict_call, "score": _score_call, "intermediates": _intermediates_call,
    "decode": _decode_call,
}


@st.composite
def well_formed_calls(draw, targets: tuple[str, ...] = tuple(MODEL_TARGETS)) -> Call:
    """A call of one of ``targets`` that follows the documented contract."""
    target = draw(st.sampled_from(targets))
    world = draw(worlds(min_batch=0 if target in ("encode", "forward", "loss") else 1))
    if target in ("MT5Config", "from_hf_state_dict") and world.form != "plain":
        world = dataclasses.replace(world, params=mt5fn.init_params(world.cfg), form="plain")
    return MODEL_TARGETS[target](world, draw)


# ------------------------------------------------------------------ defects
def _ids_defects(ids: torch.Tensor, vocab_size: int, *, labels: bool = False) -> list[tuple[str, Any]]:
    """(what, bad value) pairs for a (B, T) id tensor."""
    out: list[tuple[str, Any]] = [
        ("float32 ids", ids.float()), ("float16 ids", ids.half()), ("bool ids", ids.bool()),
        ("complex ids", ids.to(torch.complex64)), ("int16 ids", ids.to(torch.int16)),
        ("uint8 ids", ids.to(torch.uint8)), ("int8 ids", ids.to(torch.int8)),
        ("1-D ids", ids.reshape(-1)), ("3-D ids", ids[None]), ("0-D ids", ids.reshape(-1)[:1].reshape(())),
        ("zero-length rows", ids[:, :0]), ("a nested list", ids.tolist()), ("None", None), ("an int", 3),
        ("a string", "hello"), ("sparse ids", ids.to_sparse()),
    ]
    if ids.numel():
        for value in (vocab_size, vocab_size + 7, -1, 2 ** 31 - 1) + (() if labels else (-100,)):
            bad = ids.clone().to(torch.long)
            bad.view(-1)[-1] = value
            out.append((f"an id of {value}", bad))
    return out


def _mask_defects(mask_like: torch.Tensor) -> list[tuple[str, Any]]:
    ones = torch.ones_like(mask_like, dtype=torch.long)
    return [("a mask one column longer", torch.ones(ones.shape[0], ones.shape[1] + 1, dtype=torch.long)),
            ("a 1-D mask", ones.reshape(-1)), ("a 3-D mask", ones[None]), ("a complex mask", ones.to(torch.complex64)),
            ("a nested-list mask", ones.tolist()), ("a sparse mask", ones.to_sparse()),
            ("a mask with another batch size", torch.ones(ones.shape[0] + 1, ones.shape[1], dtype=torch.long))]


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) to a dict entry or list element of ``tree``."""
    out = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.append(prefix + (key,))
            out += _paths(value, prefix + (key,))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            out.append(prefix + (index,))
            out += _paths(value, prefix + (index,))
    return out


def _copy_tree(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _copy_tree(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_copy_tree(value) for value in tree]
    return tree


def _get(tree: Any, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


@st.composite
def bad_params(draw, params: dict, cfg: mt5fn.MT5Config, *, need_decoder: bool) -> tuple[str, Any]:
    """One structural defect of a parameter tree (never one that leaves a valid tree: dropping
    ``lm_head`` ties the head, dropping the decoder of an encoder-only call is allowed)."""
    kind = draw(st.sampled_from(["type", "drop", "extra", "shape", "dtype", "leaf-type", "blocks"]))
    if kind == "type":
        return "params that are not a dict", draw(st.sampled_from([None, [], (), "params", 3]))
    tree = _copy_tree(params)
    # dropping lm_head ties the head, an encoder-only tree is valid where no decoder is needed, and a
    # prepared tree without its fused cross_kv is the plain layout again
    paths = [path for path in _paths(tree) if path != ("lm_head",) and (need_decoder or path != ("decoder",))
             and path != ("decoder", "cross_kv")]
    leaves = [path for path in _paths(tree) if isinstance(_get(tree, path), torch.Tensor)]
    if kind == "drop":
        path = draw(st.sampled_from([path for path in paths if not isinstance(path[-1], int)]))
        del _get(tree, path[:-1])[path[-1]]
        return f"params without {'.'.join(map(str, path))}", tree
    if kind == "extra":
        containers = [()] + [path for path in _paths(tree) if isinstance(_get(tree, path), dict)]
        path = draw(st.sampled_from(containers))
        _get(tree, path)["bogus"] = torch.zeros(1)
        return f"params with an extra key under {'.'.join(map(str, path)) or 'the top'}", tree
    if kind == "blocks":
        stack = draw(st.sampled_from(["encoder", "decoder"] if "decoder" in tree else ["encoder"]))
        blocks = tree[stack]["blocks"]
        choice = draw(st.sampled_from(["short", "long", "tuple", "dict"]))
        tree[stack]["blocks"] = {"short": blocks[:-1], "long": blocks + blocks[:1], "tuple": tuple(blocks),
                                 "dict": dict(enumerate(blocks))}[choice]
        return f"params with {choice} {stack}.blocks", tree
    path = draw(st.sampled_from(leaves))
    leaf = _get(tree, path)
    parent = _get(tree, path[:-1])
    if kind == "shape":
        dim = draw(st.integers(0, leaf.dim() - 1))
        shape = list(leaf.shape)
        shape[dim] += draw(st.sampled_from([1, -1])) if shape[dim] > 1 else 1
        new = draw(st.sampled_from(["resized", "unsqueezed", "scalar"]))
        parent[path[-1]] = {"resized": torch.zeros(shape, dtype=leaf.dtype), "unsqueezed": leaf[None],
                            "scalar": leaf.reshape(-1)[0]}[new]
        return f"params with a {new} {'.'.join(map(str, path))}", tree
    if kind == "dtype":
        shared = params["shared"].dtype
        if path[-1] == "int8":
            allowed = {torch.int8}
        elif path[-1] == "scale":  # an int8 form computes in its scale's (any floating) dtype
            allowed = {torch.float32, torch.float64, torch.float16, torch.bfloat16}
        elif path[-1] == "wo":  # a float32 FFN output projection is allowed in any floating model
            allowed = {shared, torch.float32}
        else:
            allowed = {shared}
        options = [dtype for dtype in (torch.int64, torch.int32, torch.int8, torch.bool, torch.complex64,
                                       torch.float16, torch.bfloat16, torch.float32, torch.float64)
                   if dtype not in allowed]
        dtype = draw(st.sampled_from(options))
        parent[path[-1]] = leaf.to(dtype)
        return f"params with {'.'.join(map(str, path))} in {dtype}", tree
    parent[path[-1]] = draw(st.sampled_from([None, leaf.tolist(), 1.0, "weight"]))
    return f"params with a non-tensor {'.'.join(map(str, path))}", tree


@st.composite
def bad_cfg(draw, cfg: mt5fn.MT5Config) -> tuple[str, Any, tuple[str, ...]]:
    """A ``cfg`` argument that is not an MT5Config, or one that does not describe the parameters."""
    if draw(st.booleans()):
        value = draw(st.sampled_from([None, "mt5-small", {"d_model": cfg.d_model}, 3]))
        return "a cfg that is not an MT5Config", value, ("cfg",)
    change = draw(st.sampled_from(["d_model", "vocab_size", "num_layers", "num_heads", "d_ff", "ffn",
                                   "model_type"]))
    if change == "ffn":
        other = cfg.replace(feed_forward_proj="relu" if cfg.is_gated else "gated-gelu")
    elif change == "model_type":
        # t5 / mt5 share a table per stack, umt5 has one per block: switching between them changes the tree
        other = cfg.replace(model_type="umt5" if cfg.model_type != "umt5" else "t5", scale_decoder_outputs=None)
    else:
        other = cfg.replace(**{change: getattr(cfg, change) + 1})
    return f"a cfg with another {change}", other, ("params",)


@st.composite
def bad_options(draw, target: str) -> tuple[str, dict, tuple[str, ...]]:
    """A keyword option of ``target`` (forward / loss / encode) with a bad value."""
    choices = [("dropout_rate", value) for value in (*BAD_SCALARS, -0.1, 1.0, 1.5, "0.1", True, None)]
    if target in ("forward", "loss"):
        choices += [("checkpoint_blocks", value) for value in ("yes", 1, None)]
    if target == "loss":
        choices += [("reduction", value) for value in ("none", None, "MEAN", 0)]
    name, value = draw(st.sampled_from(choices))
    return f"{name}={value!r}", {name: value}, (name,)


GENERATION_DEFECTS: list[tuple[dict, tuple[str, ...]]] = [
    *[(dict(max_new_tokens=value), ("max_new_tokens",)) for value in (0, -1, 2.5, "4", True, None)],
    *[(dict(min_new_tokens=value), ("min_new_tokens",)) for value in (-1, 1.5, None)],
    *[(dict(num_beams=value), ("num_beams",)) for value in (0, -2, 1.5, None)],
    *[(dict(do_sample=True, temperature=value), ("temperature",))
      for value in (0.0, -1.0, *BAD_SCALARS, 1e-45, 1e-31, 1e31, "1")],
    *[(dict(temperature=value), ("temperature",)) for value in BAD_SCALARS],
    *[(dict(do_sample=True, top_k=value), ("top_k",)) for value in (0, -3, 2.0)],
    *[(dict(do_sample=True, top_p=value), ("top_p",)) for value in (0.0, 1.5, -0.1, *BAD_SCALARS)],
    *[(dict(num_beams=2, max_new_tokens=4, length_penalty=value), ("length_penalty",))
      for value in (5000.0, -5000.0, 80.0, *BAD_SCALARS)],
    *[(dict(repetition_penalty=value), ("repetition_penalty",))
      for value in (0.0, -1.0, 1e-300, 1e300, *BAD_SCALARS)],
    *[(dict(no_repeat_ngram_size=value), ("no_repeat_ngram_size",)) for value in (-1, 1.5)],
    *[(dict(num_beams=2, num_return_sequences=value), ("num_return_sequences",)) for value in (0, 3, -1)],
    (dict(num_return_sequences=2), ("num_return_sequences",)),
    *[(dict(early_stopping=value), ("early_stopping",)) for value in ("sometimes", 2, None)],
    *[(dict(do_sample=value), ("do_sample",)) for value in ("yes", 1, None)],
    (dict(beams=2), ("beams",)), (dict(max_length=5), ("max_length",)),
    (dict(max_new_tokens=10 ** 12), ("max_new_tokens",)),
    (dict(max_new_tokens=10 ** 15, num_beams=2), ("max_new_tokens",)),
]


@st.composite
def malformed_model_calls(draw, targets: tuple[str, ...] = ("encode", "forward", "loss", "generate", "stream",
                                                            "init_cache", "decode_step", "score",
                                                            "intermediates", "decode")) -> Call:
    """A model or decoding call (``targets``) with exactly one defect; ``names`` says what the error names."""
    target = draw(st.sampled_from(targets))
    w = draw(worlds())
    if target == "stream":  # greedy or sampling (stream refuses beams by design)
        call = Call("stream", lambda **kw: list(mt5fn.stream(**kw)),
                    dict(params=w.params, cfg=w.cfg, input_ids=w.input_ids, attention_mask=w.attention_mask,
                         max_new_tokens=draw(st.integers(1, 3)), do_sample=draw(st.booleans())))
    else:
        call = MODEL_TARGETS[target](w, draw)
        if call.target == "stream":  # the generate builder may pick stream; keep the target asked for
            call = Call("generate", mt5fn.generate, call.kwargs)
    kwargs = dict(call.kwargs)
    need_decoder = target != "encode"
    kinds = ["params", "cfg", "ids"]
    kinds += {"encode": ["mask", "options"], "forward": ["mask", "options", "batch"],
              "loss": ["mask", "options", "batch"],
              "generate": ["mask", "generation", "empty", "long", "gen-args", "encoder_outputs", "prefix",
                           "no-source"],
              "stream": ["mask", "empty", "long", "encoder_outputs", "prefix", "no-source"],
              "score": ["mask", "batch"], "intermediates": ["mask", "batch"], "decode": ["mask", "hidden", "batch"],
              "init_cache": ["mask", "hidden", "max_length"], "decode_step": ["cache", "inplace", "batch"]}[target]
    kind = draw(st.sampled_from(kinds))
    if kind in ("ids", "mask", "empty", "long") and kwargs.get("input_ids") is None and "input_ids" in kwargs:
        kwargs["input_ids"] = w.input_ids  # these defects are of the ids and their mask
    if kind in ("ids", "mask", "empty", "long", "no-source"):
        kwargs.pop("encoder_outputs", None)
    if kind == "ids" and target in ("generate", "stream"):
        kwargs.pop("decoder_input_ids", None)
    if target == "init_cache" and kind == "ids":
        kind = "hidden"
    if kind == "params":
        defect, kwargs["params"] = draw(bad_params(w.params, w.cfg, need_decoder=need_decoder))
        names = ("params",)
    elif kind == "cfg":
        defect, kwargs["cfg"], names = draw(bad_cfg(w.cfg))
    elif kind == "ids":
        name = {"decode_step": "token_ids"}.get(target) or draw(st.sampled_from(
            [key for key in ("input_ids", "decoder_input_ids", "labels") if key in kwargs]))
        defect, kwargs[name] = draw(st.sampled_from(_ids_defects(kwargs[name], w.cfg.vocab_size,
                                                                 labels=name == "labels")))
        names = (name,)
    elif kind == "mask":
        pairs = {"encode": [("attention_mask", "input_ids")],
                 "forward": [("attention_mask", "input_ids"), ("decoder_attention_mask", "decoder_input_ids")],
                 "intermediates": [("attention_mask", "input_ids"), ("decoder_attention_mask", "decoder_input_ids")],
                 "loss": [("attention_mask", "input_ids"), ("decoder_attention_mask", "labels")],
                 "score": [("attention_mask", "input_ids"), ("decoder_attention_mask", "labels")],
                 "generate": [("attention_mask", "input_ids")], "stream": [("attention_mask", "input_ids")],
                 "init_cache": [("encoder_mask", "encoder_hidden")],
                 "decode": [("attention_mask", "encoder_hidden"), ("decoder_attention_mask", "decoder_input_ids")]}[target]
        name, of = draw(st.sampled_from(pairs))
        like = kwargs[of][..., 0] if of == "encoder_hidden" else kwargs[of]
        defect, kwargs[name] = draw(st.sampled_from(_mask_defects(like)))
        names = (name,)
    elif kind == "options":
        defect, changes, names = draw(bad_options(target))
        kwargs.update(changes)
    elif kind == "batch":
        name = {"forward": "decoder_input_ids", "intermediates": "decoder_input_ids", "loss": "labels",
                "score": "labels", "decode_step": "token_ids", "decode": "decoder_input_ids"}[target]
        value = kwargs[name]
        kwargs[name] = torch.cat([value, value[:1]]) if draw(st.booleans()) or value.shape[0] < 2 else value[:-1]
        defect, names = f"{name} with another batch size", (name,)
    elif kind == "generation":
        changes, names = draw(st.sampled_from(GENERATION_DEFECTS))
        kwargs.pop("config", None)
        for key in ("num_beams", "num_return_sequences", "do_sample", "length_penalty", "temperature", "top_k",
                    "top_p"):
            kwargs.pop(key, None)  # the defect alone decides the decoding mode
        kwargs.update(changes)
        if "max_new_tokens" not in kwargs:
            kwargs["max_new_tokens"] = 3
        defect = f"generation setting {changes}"
    elif kind == "empty":
        kwargs["input_ids"], kwargs["attention_mask"] = w.input_ids[:0], None
        kwargs["num_beams"] = draw(st.sampled_from([1, 2]))
        kwargs["num_return_sequences"] = 1
        kwargs.pop("config", None)
        kwargs.setdefault("max_new_tokens", 2)
        defect, names = "an empty batch", ("input_ids",)
    elif kind == "long":
        kwargs["input_ids"] = torch.zeros(1, 10 ** 6, dtype=torch.long)
        kwargs["attention_mask"] = None
        defect, names = "a 10**6-token input (a terabyte position bias)", ("input_ids",)
    elif kind == "gen-args":
        choice = draw(st.sampled_from(["config", "generator"]))
        if choice == "config":
            kwargs["config"] = draw(st.sampled_from([{"max_new_tokens": 3}, "greedy", 3]))
            names = ("config",)
        else:
            kwargs["generator"] = draw(st.sampled_from([0, "seed", torch.manual_seed]))
            kwargs.update(do_sample=True, num_beams=1, num_return_sequences=1)
            kwargs.pop("config", None)
            kwargs.setdefault("max_new_tokens", 2)
            names = ("generator",)
        defect = f"a bad {choice}"
    elif kind == "encoder_outputs":
        hidden = mt5fn.encode(w.params, w.cfg, w.input_ids, w.attention_mask)
        choices = [("integer encoder_outputs", hidden.long(), ("encoder_outputs",)),
                   ("2-D encoder_outputs", hidden[..., 0], ("encoder_outputs",)),
                   ("encoder_outputs one wider", torch.zeros(*hidden.shape[:2], hidden.shape[2] + 1,
                                                             dtype=hidden.dtype), ("encoder_outputs",)),
                   ("zero-length encoder_outputs", hidden[:, :0], ("encoder_outputs",)),
                   ("empty encoder_outputs", hidden[:0], ("encoder_outputs",)),
                   ("encoder_outputs as a list", hidden.tolist(), ("encoder_outputs",)),
                   ("encoder_outputs in another dtype",
                    hidden.to(torch.float64 if hidden.dtype != torch.float64 else torch.float32), ("encoder_outputs",)),
                   ("encoder_outputs one row longer than input_ids", torch.cat([hidden, hidden[:1]]),
                    ("input_ids", "encoder_outputs"))]
        defect, kwargs["encoder_outputs"], names = draw(st.sampled_from(choices))
        kwargs["input_ids"] = w.input_ids
        kwargs["attention_mask"] = None
        if defect in ("empty encoder_outputs", "encoder_outputs as a list"):
            kwargs["input_ids"] = None
    elif kind == "prefix":
        prefix = w.decoder_input_ids.clone()
        prefix[:, 0] = w.cfg.decoder_start_token_id
        choices = [(what, value) for what, value in _ids_defects(prefix, w.cfg.vocab_size)
                   if value is not None]  # None is "no prefix", which is valid
        choices.append(("a prefix with another batch size", torch.cat([prefix, prefix[:1]])))
        if prefix.shape[0] > 1:
            mixed = prefix.clone()
            mixed[-1, 0] = (w.cfg.decoder_start_token_id + 1) % w.cfg.vocab_size
            choices.append(("rows that begin with the start token and rows that do not", mixed))
        defect, kwargs["decoder_input_ids"] = draw(st.sampled_from(choices))
        names = ("decoder_input_ids",)
    elif kind == "no-source":
        kwargs["input_ids"] = None
        defect, names = "no input_ids and no encoder_outputs", ("input_ids",)
    elif kind == "hidden":
        hidden = kwargs["encoder_hidden"]
        choices = [("integer encoder_hidden", hidden.long()), ("2-D encoder_hidden", hidden[..., 0]),
                   ("encoder_hidden one wider", torch.zeros(*hidden.shape[:2], hidden.shape[2] + 1, dtype=hidden.dtype)),
                   ("zero-length encoder_hidden", hidden[:, :0]), ("a list", hidden.tolist()), ("None", None),
                   ("encoder_hidden in another dtype",
                    hidden.to(torch.float64 if hidden.dtype == torch.float32 else torch.float32))]
        defect, kwargs["encoder_hidden"] = draw(st.sampled_from(choices))
        names = ("encoder_hidden",)
    elif kind == "max_length":
        value = draw(st.sampled_from([0, -1, 2.5, "4", True, None, 10 ** 12]))
        kwargs["max_length"] = value
        defect, names = f"max_length={value!r}", ("max_length",)
    elif kind == "cache":
        cache = kwargs["cache"]
        choice = draw(st.sampled_from(["type", "heads", "dtype", "full", "rank"]))
        names = ("cache",)
        if choice == "type":
            kwargs["cache"] = draw(st.sampled_from([None, {}, (cache.self_key, cache.self_value), "cache"]))
        elif choice == "heads":
            key = torch.zeros(cache.self_key.shape[0], cache.self_key.shape[1], cache.self_key.shape[2] + 1,
                              *cache.self_key.shape[3:], dtype=cache.self_key.dtype)
            kwargs["cache"] = dataclasses.replace(cache, self_key=key, self_value=key.clone())
        elif choice == "dtype":
            other = torch.float64 if cache.self_key.dtype == torch.float32 else torch.float32
            kwargs["cache"] = dataclasses.replace(cache, self_key=cache.self_key.to(other),
                                                  self_value=cache.self_value.to(other))
        elif choice == "rank":
            kwargs["cache"] = dataclasses.replace(cache, self_key=cache.self_key[0], self_value=cache.self_value[0])
        else:  # more tokens than the cache has slots
            steps = cache.max_length + draw(st.integers(1, 3))
            kwargs["token_ids"] = kwargs["token_ids"][:, :1].expand(-1, steps).contiguous()
            names = ("cache", "token_ids")
        defect = f"a bad cache ({choice})"
    elif kind == "inplace":
        kwargs["inplace"] = draw(st.sampled_from(["yes", 1, None]))
        defect, names = f"inplace={kwargs['inplace']!r}", ("inplace",)
    return Call(target, call.fn, kwargs, names, defect)


# ------------------------------------------------------------------ MT5Config and state dicts
_INT_FIELDS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
               "relative_attention_num_buckets", "relative_attention_max_distance")


@st.composite
def malformed_configs(draw) -> Call:
    """``MT5Config(**fields)`` of a valid config with one field (or one combination) broken."""
    cfg = draw(configs())
    fields = _config_fields(cfg)
    kind = draw(st.sampled_from(["int", "float", "ffn", "model_type", "flag", "token", "buckets", "scale"]))
    if kind == "int":
        name = draw(st.sampled_from(_INT_FIELDS))
        value = draw(st.sampled_from([0, -1, 2 ** 31, 10 ** 30, 2.0, "8", True, float("nan")]
                                     + ([] if name == "num_decoder_layers" else [None])))
    elif kind == "float":
        name = draw(st.sampled_from(["dropout_rate", "layer_norm_epsilon"]))
        bad = {"dropout_rate": [1.0, -0.1, 10 ** 400], "layer_norm_epsilon": [0.0, -1e-6, 10 ** 400]}[name]
        value = draw(st.sampled_from([*BAD_SCALARS, *bad, "0.1", True, None]))
    elif kind == "ffn":
        name, value = "feed_forward_proj", draw(st.sampled_from(["gated-gelu-new", "swiglu", "", "gated-", "-relu",
                                                                "gated-gelu ", 5, None]))
    elif kind == "model_type":
        name, value = "model_type", draw(st.sampled_from(["bart", "T5", "", None, 5]))
    elif kind == "flag":
        name = "tie_word_embeddings"
        value = draw(st.sampled_from([0, 1, "false", "true", None]))
    elif kind == "token":
        name = draw(st.sampled_from(["pad_token_id", "eos_token_id", "decoder_start_token_id"]))
        value = draw(st.sampled_from([cfg.vocab_size, cfg.vocab_size + 5, -1, 1.0, "0"]))
    elif kind == "buckets":
        buckets = draw(st.integers(4, 64))
        name = draw(st.sampled_from(["relative_attention_max_distance", "relative_attention_num_buckets"]))
        if name == "relative_attention_num_buckets" and draw(st.booleans()):
            value = draw(st.integers(1, 3))
        else:
            fields["relative_attention_num_buckets"] = buckets
            name, value = "relative_attention_max_distance", draw(st.integers(1, buckets // 2))
    else:
        name = "scale_decoder_outputs"
        if draw(st.booleans()):
            value = draw(st.sampled_from([1, "yes", 0.0]))
        else:
            fields["model_type"], value = "mt5", True
    fields[name] = value
    return Call("MT5Config", mt5fn.MT5Config, fields, (name,), f"{name}={value!r}")


@st.composite
def malformed_state_dicts(draw) -> Call:
    """``from_hf_state_dict`` with one defect in the state dict or the config."""
    w = draw(worlds())
    if w.form != "plain":
        w = dataclasses.replace(w, params=mt5fn.init_params(w.cfg), form="plain")
    state = dict(mt5fn.to_hf_state_dict(w.params, w.cfg))
    required = [name for name in state if ".block." in name or name.endswith("final_layer_norm.weight")]
    kind = draw(st.sampled_from(["drop", "extra", "shape", "type", "dtype", "container", "cfg"]))
    names = ("state_dict",)
    if kind == "drop":
        name = draw(st.sampled_from(required))
        del state[name]
    elif kind == "extra":
        name = draw(st.sampled_from(["encoder.block.99.layer.0.SelfAttention.q.weight", "bogus", "lm_head.bias"]))
        state[name] = torch.zeros(2)
    elif kind == "shape":
        name = draw(st.sampled_from(required))
        state[name] = state[name][..., :-1] if state[name].shape[-1] > 1 else torch.zeros(*state[name].shape, 2)
    elif kind == "type":
        name = draw(st.sampled_from(required))
        state[name] = draw(st.sampled_from([None, state[name].tolist(), 1.0]))
    elif kind == "dtype":
        name = draw(st.sampled_from(required))
        state[name] = state[name].to(draw(st.sampled_from([torch.int64, torch.bool, torch.complex64, torch.int8])))
    elif kind == "container":
        state = draw(st.sampled_from([list(state.items()), None, "model.safetensors"]))
        name = "the container"
    else:
        kind, name = "cfg", "cfg"
        return Call("from_hf_state_dict", mt5fn.from_hf_state_dict,
                    dict(state_dict=state, cfg=draw(st.sampled_from([None, w.cfg.to_hf(), "t5-small"]))),
                    ("cfg",), "a cfg that is not an MT5Config")
    return Call("from_hf_state_dict", mt5fn.from_hf_state_dict, dict(state_dict=state, cfg=w.cfg), names,
                f"{kind}: {name}")


# ------------------------------------------------------------------ the tokenizer
CORPUS = ["The quick brown fox jumps over the lazy dog.", "Das Haus ist wunderbar, und der Garten ist groß.",
          "Быстрая коричневая лиса прыгает.", "我们今天去学校学习中文。", "Numbers: 1234567890, 3.14, 42%."] * 4


_FOLDERS: list[str] = []
atexit.register(lambda: [shutil.rmtree(folder, ignore_errors=True) for folder in _FOLDERS])


def _folder(prefix: str) -> str:
    """A temporary directory removed when the process exits."""
    _FOLDERS.append(tempfile.mkdtemp(prefix=prefix))
    return _FOLDERS[-1]


@functools.lru_cache(maxsize=None)
def tokenizer_dir() -> str:
    """A directory with a tiny trained ``spiece.model`` (once per process)."""
    path = _folder("mt5fn-fuzz-tok-")
    mt5fn.train_tokenizer(CORPUS, path, vocab_size=60, extra_ids=10)
    return path


def tokenizer() -> mt5fn.Tokenizer:
    return mt5fn.Tokenizer.from_pretrained(tokenizer_dir())


def _model_bytes() -> bytes:
    with open(os.path.join(tokenizer_dir(), "spiece.model"), "rb") as handle:
        return handle.read()


@st.composite
def well_formed_tokenizer_calls(draw) -> Call:
    """Encoding any text (no lone surrogates), with any consistent options; decoding any valid ids."""
    tok = tokenizer()
    texts = draw(st.lists(st.text(max_size=30), min_size=1, max_size=3))
    kind = draw(st.sampled_from(["encode", "batch_encode", "decode", "batch_decode", "sentinel", "new"]))
    if kind == "encode":
        return Call("Tokenizer.encode", tok.encode, dict(text=texts[0]))
    if kind == "batch_encode":
        mode = draw(st.sampled_from(["longest", "truncate", "max_length", "none"]))
        length = draw(st.integers(1, 40))
        kwargs = {"longest": dict(padding=True), "truncate": dict(padding=True, truncation=True, max_length=length),
                  "max_length": dict(padding="max_length", truncation=True, max_length=length),
                  "none": dict(padding=False, return_tensors=None)}[mode]
        return Call("Tokenizer.batch_encode", tok.batch_encode, dict(texts=texts, **kwargs))
    # ids past the tokenizer (a model's padded vocabulary rows) are valid and decode to nothing
    ids = draw(st.lists(st.integers(0, len(tok) + 30), max_size=12))
    if kind == "decode":
        value = torch.tensor(ids, dtype=torch.long) if draw(st.booleans()) else ids
        return Call("Tokenizer.decode", tok.decode, dict(ids=value, skip_special_tokens=draw(st.booleans())))
    if kind == "batch_decode":
        return Call("Tokenizer.batch_decode", tok.batch_decode, dict(sequences=[ids, ids[::-1]]))
    if kind == "sentinel":
        return Call("Tokenizer.sentinel_id", tok.sentinel_id, dict(n=draw(st.integers(0, tok.extra_ids - 1))))
    return Call("Tokenizer", mt5fn.Tokenizer, dict(model=_model_bytes(), extra_ids=draw(st.integers(0, 50))))


@st.composite
def malformed_tokenizer_calls(draw) -> Call:
    """A tokenizer call with one defect: the text, an option, the ids, the model bytes or a file."""
    tok = tokenizer()
    kind = draw(st.sampled_from(["text", "texts", "options", "ids", "sequences", "sentinel", "model", "files"]))
    if kind == "text":
        value = draw(st.sampled_from([None, 5, b"bytes", ["a"], "lone \ud800 surrogate", "\udcff"]))
        return Call("Tokenizer.encode", tok.encode, dict(text=value), ("text",), f"text={value!r}")
    if kind == "texts":
        value = draw(st.sampled_from(["one string", None, 5, [b"bytes"], ["ok", None], ["\ud83d"]]))
        return Call("Tokenizer.batch_encode", tok.batch_encode, dict(texts=value), ("texts",), f"texts={value!r}")
    if kind == "options":
        name, value, extra = draw(st.sampled_from([
            ("padding", "left", {}), ("padding", None, {}), ("truncation", "yes", {"max_length": 4}),
            ("max_length", 0, {"truncation": True}), ("max_length", -3, {"truncation": True}),
            ("max_length", 2.5, {"truncation": True}), ("max_length", None, {"truncation": True}),
            ("return_tensors", "np", {}), ("max_length", 10 ** 12, {"padding": "max_length", "truncation": True})]))
        return Call("Tokenizer.batch_encode", tok.batch_encode, dict(texts=["a b"], **{name: value}, **extra),
                    (name,), f"{name}={value!r}")
    if kind == "ids":
        value = draw(st.sampled_from([[-1], [1.5], [[1]], None, "1 2", torch.zeros(2, 2, dtype=torch.long),
                                      torch.tensor([0.5]), [True]]))
        return Call("Tokenizer.decode", tok.decode, dict(ids=value), ("ids",), f"ids={value!r}")
    if kind == "sequences":
        value = draw(st.sampled_from([None, 5, torch.zeros(3, dtype=torch.long), [1, 2], [[-1]]]))
        return Call("Tokenizer.batch_decode", tok.batch_decode, dict(sequences=value), ("sequences", "ids"),
                    f"sequences={value!r}")
    if kind == "sentinel":
        value = draw(st.sampled_from([-1, tok.extra_ids, 1.0, None]))
        return Call("Tokenizer.sentinel_id", tok.sentinel_id, dict(n=value), ("n must",), f"n={value!r}")
    if kind == "model":
        model = _model_bytes()
        name, kwargs = draw(st.sampled_from([
            ("model", dict(model=b"not a model")), ("model", dict(model=model[: len(model) // 2])),
            ("model", dict(model="spiece.model")), ("model", dict(model=None)),
            ("extra_ids", dict(model=model, extra_ids=-1)), ("extra_ids", dict(model=model, extra_ids=2.0)),
            ("extra_ids", dict(model=model, extra_ids=10 ** 9))]))
        return Call("Tokenizer", mt5fn.Tokenizer, kwargs, (name,), f"{name}: {str(kwargs.get(name))[:20]}")
    # files: a directory whose tokenizer files are corrupt; the error names the file
    folder = _folder("mt5fn-fuzz-bad-")
    with open(os.path.join(folder, "spiece.model"), "wb") as handle:
        handle.write(_model_bytes())
    broken = draw(st.sampled_from(["spiece.model", "tokenizer_config.json"]))
    content = draw(st.sampled_from([b"\xff\xfe\x00binary", b"{not json", b"[1, 2]", b'{"extra_ids": -4}',
                                    b'{"extra_ids": 1000000000}']))
    if broken == "spiece.model":
        content = content[:9]
    with open(os.path.join(folder, broken), "wb") as handle:
        handle.write(content)
    return Call("Tokenizer.from_pretrained", mt5fn.Tokenizer.from_pretrained, dict(path=folder),
                (os.path.join(folder, broken),), f"{broken} holding {content!r}")


# ------------------------------------------------------------------ files the library reads and writes (issue 21)
# Four classes beyond single calls: adapter folders (closed world, one version, no pickle),
# file outputs (never onto a non-regular file), text encodings (BOM, UTF-16 / UTF-32, NUL)
# and work bounds (beam search past MT5FN_MAX_WORK). Each call breaks one thing and must be
# refused with ValueError, TypeError or OSError naming the file, option or bound.
_FILE_CFG = mt5fn.MT5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=2,
                            model_type="mt5", dropout_rate=0.0)


@functools.lru_cache(maxsize=None)
def _file_params() -> dict:
    return mt5fn.init_params(_FILE_CFG, seed=0)


def _adapter_folder(draw) -> tuple[str, str, tuple[str, ...]]:
    """A saved adapter folder with one defect: (folder, defect, names the error must hold)."""
    params = _file_params()
    folder = os.path.join(_folder("mt5fn-fuzz-adapter-"), "adapter")
    mt5fn.lora.save_adapter(mt5fn.lora.init(params, _FILE_CFG, rank=2, alpha=4, seed=0), _FILE_CFG, folder)
    defect = draw(st.sampled_from(["link config out", "link weights out", "garbage bin", "deep config",
                                   "utf-16 config"]))
    if defect.startswith("link"):
        name = "adapter_config.json" if "config" in defect else "adapter_model.safetensors"
        outside = _folder("mt5fn-fuzz-outside-")
        os.replace(os.path.join(folder, name), os.path.join(outside, name))
        os.symlink(os.path.join(outside, name), os.path.join(folder, name))
        return folder, defect, (name,)
    if defect == "garbage bin":
        os.remove(os.path.join(folder, "adapter_model.safetensors"))
        with open(os.path.join(folder, "adapter_model.bin"), "wb") as handle:
            handle.write(b"\x80\x04" + draw(st.binary(min_size=0, max_size=64)))
        return folder, defect, ("adapter_model.bin",)
    depth = draw(st.integers(100, 100_000))
    data = (b"[" * depth + b"]" * depth if defect == "deep config"
            else json.dumps({"peft_type": "LORA", "r": 2}).encode("utf-16"))
    with open(os.path.join(folder, "adapter_config.json"), "wb") as handle:
        handle.write(data)
    return folder, defect, ("adapter_config.json",)


@st.composite
def malformed_file_calls(draw) -> Call:
    """A read of an adapter folder, a write of a file output, a read of a data file, or a beam search,
    each with one defect."""
    kind = draw(st.sampled_from(["adapter", "output", "encoding", "work"]))
    if kind == "adapter":
        folder, defect, names = _adapter_folder(draw)
        return Call("load_adapter", mt5fn.lora.load_adapter, dict(path=folder, params=_file_params(),
                                                                  cfg=_FILE_CFG), names, defect)
    if kind == "output":
        from mt5fn.checkpoint import atomic_write_bytes

        defect = draw(st.sampled_from(["fifo", "device", "directory", "link to a fifo"]))
        root = _folder("mt5fn-fuzz-out-")
        path = {"device": "/dev/null", "directory": root}.get(defect, os.path.join(root, "fifo"))
        if defect in ("fifo", "link to a fifo"):
            os.mkfifo(os.path.join(root, "fifo"))
        if defect == "link to a fifo":
            os.symlink("fifo", os.path.join(root, "link"))
            path = os.path.join(root, "link")
        return Call("atomic_write_bytes", atomic_write_bytes, dict(path=path, data=b"x"),
                    (os.path.basename(path), "null", "directory"), defect)
    if kind == "encoding":
        from mt5fn.data import Fields, read_records

        suffix = draw(st.sampled_from([".txt", ".tsv", ".jsonl", ".json"]))
        defect = draw(st.sampled_from(["utf-16", "utf-32", "nul"]))
        text = "\n".join(json.dumps({"text": line}) if "json" in suffix else line for line in CORPUS[:3]) + "\n"
        data = (text.encode(defect) if defect != "nul"
                else text.encode() + b"bad\x00line\n")
        path = os.path.join(_folder("mt5fn-fuzz-text-"), "data" + suffix)
        with open(path, "wb") as handle:
            handle.write(data)
        names = ("UTF-16",) if defect == "utf-16" else ("UTF-32",) if defect == "utf-32" else ("NUL",)
        return Call("read_records", read_records, dict(paths=[path], fields=Fields()), names, defect)
    beams = draw(st.integers(100, 400))
    tokens = draw(st.integers(100, 300))
    limit = beams * tokens * (_FILE_CFG.vocab_size + tokens) - 1

    def bounded_generate(**kwargs):
        old = os.environ.get("MT5FN_MAX_WORK")
        os.environ["MT5FN_MAX_WORK"] = str(limit)
        try:
            return mt5fn.generate(_file_params(), _FILE_CFG, torch.tensor([[5, 6, 1]]), **kwargs)
        finally:
            os.environ.pop("MT5FN_MAX_WORK") if old is None else os.environ.__setitem__("MT5FN_MAX_WORK", old)

    return Call("generate", bounded_generate, dict(max_new_tokens=tokens, num_beams=beams),
                ("MT5FN_MAX_WORK",), f"work just past the bound {limit}")


@st.composite
def well_formed_text_files(draw) -> Call:
    """A data file in any reader's format, with or without a UTF-8 byte order mark: read whole."""
    from mt5fn.data import Fields, read_records

    suffix = draw(st.sampled_from([".txt", ".tsv", ".jsonl", ".json"]))
    bom = draw(st.booleans())
    lines = draw(st.lists(st.sampled_from(CORPUS[:5]), min_size=1, max_size=5))
    if suffix == ".json":
        text = json.dumps([{"text": line} for line in lines])
    elif suffix == ".jsonl":
        text = "".join(json.dumps({"text": line}) + "\n" for line in lines)
    elif suffix == ".tsv":
        text = "text\n" + "".join(line + "\n" for line in lines)
    else:
        text = "".join(line + "\n" for line in lines)
    path = os.path.join(_folder("mt5fn-fuzz-text-"), "data" + suffix)
    with open(path, "wb") as handle:
        handle.write((b"\xef\xbb\xbf" if bom else b"") + text.encode())

    def read(**kwargs):
        items = read_records(**kwargs).items
        assert items == lines, (items, lines)  # the BOM is never part of the first record
        return items

    return Call("read_records", read, dict(paths=[path], fields=Fields()), (), f"bom={bom}")
