"""Bad checkpoints and bad save arguments: one clear error naming the file and the problem.

Loading never writes and never runs code from a checkpoint; a failed save
leaves nothing behind (no target directory, no temporary siblings).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

import mt5fn
from test_checkpoint import tiny


@pytest.fixture
def ckpt(tmp_path):
    """A valid single-file safetensors checkpoint of a tiny untied mT5."""
    cfg = tiny("mt5")
    mt5fn.save_pretrained(mt5fn.init_params(cfg), cfg, tmp_path / "ckpt")
    return tmp_path / "ckpt"


@pytest.fixture
def sharded(tmp_path):
    cfg = tiny("mt5")
    mt5fn.save_pretrained(mt5fn.init_params(cfg), cfg, tmp_path / "sharded", max_shard_size=3000)
    return tmp_path / "sharded"


def listing(path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, name), path)
                  for root, dirs, files in os.walk(path) for name in dirs + files)


def expect(path, error, *fragments):
    """load_pretrained(path) raises ``error`` whose message holds every fragment, and writes nothing."""
    before = listing(os.path.dirname(path))
    with pytest.raises(error) as info:
        mt5fn.load_pretrained(path)
    for fragment in fragments:
        assert str(fragment) in str(info.value), (fragment, str(info.value))
    assert listing(os.path.dirname(path)) == before
    return info.value


def test_missing_config(ckpt):
    os.remove(ckpt / "config.json")
    expect(ckpt, FileNotFoundError, ckpt / "config.json", "missing")


def test_unknown_model_type(ckpt):
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    expect(ckpt, ValueError, ckpt / "config.json", "model_type", "'bert'")


def test_config_that_is_not_json(ckpt):
    (ckpt / "config.json").write_text("{not json")
    expect(ckpt, ValueError, ckpt / "config.json", "not valid JSON")


def test_binary_config_and_index_name_the_file(ckpt, sharded):
    (ckpt / "config.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff binary")
    expect(ckpt, ValueError, ckpt / "config.json", "not UTF-8 text")
    (sharded / "model.safetensors.index.json").write_bytes(b"{\"weight_map\": \xff}")
    expect(sharded, ValueError, sharded / "model.safetensors.index.json", "not UTF-8 text")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_truncated_or_corrupt_safetensors(ckpt, damage):
    file = ckpt / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\xff" * 64, "empty": b""}[damage])
    expect(ckpt, ValueError, file, "truncated or corrupt")


def test_shard_named_by_index_but_absent(sharded):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    os.remove(sharded / shard)
    expect(sharded, FileNotFoundError, sharded / "model.safetensors.index.json", shard, "missing")


def test_index_names_a_tensor_its_shard_lacks(sharded):
    file = sharded / "model.safetensors.index.json"
    index = json.loads(file.read_text())
    index["weight_map"]["encoder.block.9.layer.0.SelfAttention.q.weight"] = sorted(index["weight_map"].values())[0]
    file.write_text(json.dumps(index))
    expect(sharded, ValueError, file, "encoder.block.9.layer.0.SelfAttention.q.weight")


def test_tensor_shape_disagrees_with_config(ckpt):
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "d_ff": 32}))
    error = expect(ckpt, ValueError, ckpt / "config.json", "wrong shape",
                   "encoder.block.0.layer.1.DenseReluDense.wi_0.weight: shape (24, 16), config expects (32, 16)")
    assert str(ckpt / "model.safetensors") in str(error)


def test_extra_layers_in_the_weights(ckpt):
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "num_layers": 1}))
    expect(ckpt, ValueError, "unexpected: encoder.block.1.layer.0.SelfAttention.q.weight",
           ckpt / "model.safetensors")


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, "int8", "float", "f32x", 3])
def test_dtype_that_cannot_hold_weights(ckpt, dtype):
    if dtype == "float":  # an accepted alias of float32, as in torch
        assert mt5fn.load_pretrained(ckpt, dtype=dtype)[1]["shared"].dtype == torch.float32
        return
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        mt5fn.load_pretrained(ckpt, dtype=dtype)


def test_path_is_a_file_that_holds_no_weights(ckpt):
    expect(ckpt / "config.json", ValueError, ckpt / "config.json", "not a weights file")
    (ckpt / "empty.safetensors").write_bytes(b"")
    expect(ckpt / "empty.safetensors", ValueError, ckpt / "empty.safetensors", "not a readable safetensors file")


def test_path_does_not_exist(tmp_path):
    expect(tmp_path / "nope", FileNotFoundError, tmp_path / "nope")


def test_no_weights(ckpt):
    os.remove(ckpt / "model.safetensors")
    expect(ckpt, FileNotFoundError, "no weights found", "model.safetensors", "pytorch_model.bin")


def test_integer_tensor_in_checkpoint(ckpt):
    from safetensors.torch import load_file, save_file

    state = load_file(ckpt / "model.safetensors")
    state["shared.weight"] = state["shared.weight"].to(torch.int32)
    save_file(state, ckpt / "model.safetensors")
    expect(ckpt, ValueError, "'shared.weight'", "torch.int32", ckpt / "model.safetensors")


class _Payload:
    """Unpickling this would create a file: the test proves the payload is live, then that we refuse it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_runs_code_is_refused(ckpt, tmp_path):
    marker = tmp_path / "pwned"
    evil = {"shared.weight": _Payload(marker)}
    os.remove(ckpt / "model.safetensors")
    torch.save(evil, ckpt / "pytorch_model.bin")
    torch.load(ckpt / "pytorch_model.bin", weights_only=False)  # the unsafe loader runs it ...
    assert marker.exists()
    os.remove(marker)
    expect(ckpt, ValueError, ckpt / "pytorch_model.bin", "refused", "only weights-only pickles")
    assert not marker.exists()  # ... ours never does


def test_bin_that_is_not_a_checkpoint(ckpt):
    os.remove(ckpt / "model.safetensors")
    (ckpt / "pytorch_model.bin").write_bytes(b"PK\x03\x04 garbage zip")
    expect(ckpt, ValueError, ckpt / "pytorch_model.bin", "not a readable PyTorch checkpoint")
    torch.save([torch.zeros(2)], ckpt / "pytorch_model.bin")
    expect(ckpt, ValueError, ckpt / "pytorch_model.bin", "expected a dict")


# ------------------------------------------------------------------------- save
@pytest.fixture
def good():
    cfg = tiny("umt5")
    return cfg, mt5fn.init_params(cfg)


def _bad_params(kind, cfg, params):
    flat = dict(mt5fn.flatten_params(params))
    if kind == "missing":
        del flat["decoder.blocks.1.mlp.wo"]
    elif kind == "shape":
        flat["encoder.final_norm"] = torch.ones(3)
    elif kind == "extra":
        flat["encoder.extra"] = torch.ones(3)
    elif kind == "integer":
        flat["shared"] = flat["shared"].to(torch.int64)
    elif kind == "mixed":
        flat["shared"] = flat["shared"].to(torch.bfloat16)
    return mt5fn.unflatten_params(flat)


@pytest.mark.parametrize("kind, error, fragment", [
    ("missing", ValueError, "decoder.blocks.1.mlp.wo"),
    ("shape", ValueError, "final_layer_norm.weight: shape (3,)"),
    ("extra", ValueError, "encoder.extra"),
    ("integer", ValueError, "params['shared'] must be a floating tensor"),
    ("mixed", ValueError, "mixed dtypes"),
])
def test_save_of_bad_params_writes_nothing(tmp_path, good, kind, error, fragment):
    cfg, params = good
    with pytest.raises(error) as info:
        mt5fn.save_pretrained(_bad_params(kind, cfg, params), cfg, tmp_path / "out" / "ckpt")
    assert fragment in str(info.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("size", [0, -5, "5 parsecs", "GB", 1.5, True])
def test_bad_shard_size(tmp_path, good, size):
    cfg, params = good
    with pytest.raises(ValueError, match="max_shard_size"):
        mt5fn.save_pretrained(params, cfg, tmp_path / "ckpt", max_shard_size=size)
    assert os.listdir(tmp_path) == []


def test_save_onto_a_file(tmp_path, good):
    cfg, params = good
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(NotADirectoryError, match="is a file"):
        mt5fn.save_pretrained(params, cfg, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep me" and os.listdir(tmp_path) == ["file"]


def test_save_with_wrong_argument_types(tmp_path, good):
    cfg, params = good
    with pytest.raises(TypeError, match="cfg must be an MT5Config"):
        mt5fn.save_pretrained(params, cfg.to_hf(), tmp_path / "a")
    with pytest.raises(TypeError, match="tokenizer must be"):
        mt5fn.save_pretrained(params, cfg, tmp_path / "a", tokenizer="spiece.model")
    assert os.listdir(tmp_path) == []
