"""Checkpoint directories are closed worlds: links may stay inside, never lead out.

A link that resolves inside the checkpoint, or inside its Hugging Face cache
repository (``models--ORG--NAME/snapshots/REV/x -> ../../blobs/HASH``), loads
and converts. A link to anywhere else is refused by ``load_pretrained``,
``Tokenizer.from_pretrained`` and ``mt5fn convert`` with an error that names
the link and where it points; nothing is copied from it, and a save keeps
such a link as a link (its content is never read).
"""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

import mt5fn
import spm
from mt5fn.cli import main
from test_atomic_save import same
from test_checkpoint import tiny

CFG = tiny("t5")


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "ckpt"
    mt5fn.save_pretrained(mt5fn.init_params(CFG, seed=0), CFG, path, tokenizer=mt5fn.Tokenizer.from_pretrained(
        spm.spiece_dir()))
    return path


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "elsewhere" / "secret.txt"
    path.parent.mkdir()
    path.write_text('{"model_type": "t5", "private": "do not copy"}')
    return path


def link_out(ckpt, name, target):
    os.remove(ckpt / name)
    os.symlink(target, ckpt / name)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_load_refuses_a_link_out_of_the_checkpoint(ckpt, secret, tmp_path, name):
    if name == "model.safetensors":  # a real weights file, just outside
        shutil.copy(ckpt / name, tmp_path / "elsewhere" / "weights.safetensors")
        secret = tmp_path / "elsewhere" / "weights.safetensors"
    link_out(ckpt, name, secret)
    with pytest.raises(ValueError) as info:
        mt5fn.load_pretrained(ckpt)
    message = str(info.value)
    assert str(ckpt / name) in message and str(secret) in message and "outside" in message


def test_load_refuses_a_shard_that_links_out(tmp_path):
    path = tmp_path / "sharded"
    mt5fn.save_pretrained(mt5fn.init_params(CFG), CFG, path, max_shard_size=3000)
    shard = sorted(n for n in os.listdir(path) if n.startswith("model-"))[1]
    shutil.move(path / shard, tmp_path / shard)
    os.symlink(tmp_path / shard, path / shard)
    with pytest.raises(ValueError, match="outside") as info:
        mt5fn.load_pretrained(path)
    assert str(path / shard) in str(info.value)


def test_links_inside_the_checkpoint_are_followed(ckpt):
    os.makedirs(ckpt / "store")
    shutil.move(ckpt / "model.safetensors", ckpt / "store" / "weights.safetensors")
    os.symlink("store/weights.safetensors", ckpt / "model.safetensors")
    assert same(mt5fn.load_pretrained(ckpt)[1], mt5fn.init_params(CFG, seed=0))


def test_tokenizer_refuses_a_link_out(ckpt, secret):
    link_out(ckpt, "tokenizer.json", secret)
    with pytest.raises(ValueError, match="outside") as info:
        mt5fn.Tokenizer.from_pretrained(ckpt)
    assert str(ckpt / "tokenizer.json") in str(info.value)


def test_convert_never_copies_a_link_out(ckpt, secret, tmp_path, capsys):
    link_out(ckpt, "tokenizer.json", secret)
    assert main(["convert", str(ckpt), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mt5fn convert: error:") and str(ckpt / "tokenizer.json") in err and str(secret) in err
    assert not (tmp_path / "out").exists()


def test_save_keeps_a_foreign_link_as_a_link(ckpt, secret):
    os.symlink(secret, ckpt / "notes.txt")
    mt5fn.save_pretrained(mt5fn.init_params(CFG, seed=1), CFG, ckpt)
    assert os.path.islink(ckpt / "notes.txt") and os.readlink(ckpt / "notes.txt") == str(secret)


def hf_cache(tmp_path, source):
    """``source`` laid out as the Hugging Face hub cache stores a download."""
    repo = tmp_path / "hub" / "models--google--tiny-t5"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name in os.listdir(source):
        data = (source / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.join("..", "..", "blobs", blob.name), snapshot / name)
    return snapshot


def test_hugging_face_cache_layout_loads_and_converts(ckpt, tmp_path, capsys):
    snapshot = hf_cache(tmp_path, ckpt)
    assert all(os.path.islink(snapshot / name) for name in os.listdir(snapshot))
    assert same(mt5fn.load_pretrained(snapshot)[1], mt5fn.init_params(CFG, seed=0))
    tok = mt5fn.Tokenizer.from_pretrained(snapshot)
    assert tok.encode("Hello <extra_id_0>") == mt5fn.Tokenizer.from_pretrained(ckpt).encode("Hello <extra_id_0>")
    assert main(["convert", str(snapshot), str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert not any(os.path.islink(tmp_path / "out" / name) for name in os.listdir(tmp_path / "out"))
    assert (tmp_path / "out" / "spiece.model").read_bytes() == (ckpt / "spiece.model").read_bytes()
    # ... but a snapshot link that leaves the repository is still refused
    os.remove(snapshot / "config.json")
    os.symlink(ckpt / "config.json", snapshot / "config.json")
    with pytest.raises(ValueError, match="outside the checkpoint directory or its Hugging Face cache repository"):
        mt5fn.load_pretrained(snapshot)


def test_bin_checkpoints_stay_weights_only(ckpt, tmp_path):
    """A pickle that would run code is refused, also as a single file."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with open(tmp_path / "evil.bin", "wb") as handle:
        pickle.dump({"shared.weight": Payload()}, handle, protocol=2)
    with pytest.raises(ValueError, match="weights-only"):
        mt5fn.load_pretrained(tmp_path / "evil.bin")
    assert not (tmp_path / "pwned").exists()
