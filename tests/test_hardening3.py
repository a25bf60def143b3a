"""Issue 21, the third hardening pass: one test per finding, grouped by the class that closes it.

* closed-world reads (adapters refuse links out of their folder, one version per read);
* the output rule (no device / FIFO targets, through symlinks, the umask, a folder's own mode, only
  marked leftovers cleaned, no stale copy resurrected, the cwd kept valid);
* text encodings (BOM, UTF-16 / UTF-32, NUL bytes), bounded JSON nesting;
* ``eos_token_id`` lists; loaded tensors own their storage; the work bound;
* the last findings: gradients through int8 forms, tokenizer.json files (string ids, deep nesting, a
  ``tokenizers`` panic, through the API and in a real process), a full disk during convert and a training
  save, FIFOs given to ``info``, the time a ``--shuffle-buffer`` / ``--max-input-length`` can cost, every
  EOS id in ``generation_config.json``, a malicious trainer state.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

import mt5fn
from mt5fn.checkpoint import _atomic
from mt5fn.checks import read_json
from mt5fn.data import Fields, read_records

CFG = mt5fn.MT5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=2, model_type="mt5",
                      dropout_rate=0.0)


@pytest.fixture(scope="module")
def params():
    return mt5fn.init_params(CFG, seed=0)


@pytest.fixture
def adapter(tmp_path, params):
    ad = mt5fn.lora.init(params, CFG, rank=2, alpha=4, seed=0)
    folder = tmp_path / "adapter"
    mt5fn.lora.save_adapter(ad, CFG, folder)
    return folder


# ------------------------------------------------------------------ closed-world reads
@pytest.mark.parametrize("name", ["adapter_config.json", "adapter_model.safetensors"])
def test_adapter_refuses_a_link_out_of_its_folder(tmp_path, params, adapter, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.replace(adapter / name, outside / name)
    os.symlink(outside / name, adapter / name)
    with pytest.raises(ValueError, match="outside"):
        mt5fn.lora.load_adapter(adapter, params, CFG)


def test_adapter_read_is_one_version(tmp_path, params, adapter, monkeypatch):
    """A save swapping the folder between the config and the weights read: the reader starts again."""
    from mt5fn.lora import _peft

    other = mt5fn.lora.init(params, CFG, rank=4, alpha=8, seed=1)
    real = _peft._read_weights
    calls = []

    def racing(folder):
        if not calls:
            calls.append(1)
            mt5fn.lora.save_adapter(other, CFG, adapter)  # the rank-4 version replaces the rank-2 one
        return real(folder)

    monkeypatch.setattr(_peft, "_read_weights", racing)
    loaded = mt5fn.lora.load_adapter(adapter, params, CFG)
    assert float(loaded["alpha"]) == 8.0 and mt5fn.lora.rank_of(loaded, CFG) == 4


def test_garbage_adapter_bin_is_a_value_error_naming_it(tmp_path, params):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                             "target_modules": ["q", "v"]}))
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04garbage that is no pickle")
    with pytest.raises(ValueError, match="adapter_model.bin"):
        mt5fn.lora.load_adapter(folder, params, CFG)


# ------------------------------------------------------------------ the output rule
def test_file_output_refuses_a_device_and_a_fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="fifo"):
        _atomic.atomic_write_bytes(fifo, b"x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(OSError, match="null"):
        _atomic.check_output_target("/dev/null")


def test_file_output_follows_the_umask_and_keeps_an_existing_mode(tmp_path):
    old = os.umask(0o022)
    try:
        _atomic.atomic_write_bytes(tmp_path / "new.txt", b"x")
        assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == 0o644
        os.chmod(tmp_path / "new.txt", 0o600)
        _atomic.atomic_write_bytes(tmp_path / "new.txt", b"y")
        assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == 0o600
    finally:
        os.umask(old)


def test_file_output_writes_through_a_symlink(tmp_path):
    (tmp_path / "real.txt").write_text("old")
    os.symlink("real.txt", tmp_path / "link.txt")
    _atomic.atomic_write_text(tmp_path / "link.txt", "new")
    assert os.path.islink(tmp_path / "link.txt")
    assert (tmp_path / "real.txt").read_text() == "new"


def test_a_private_folder_stays_private(tmp_path, params):
    target = tmp_path / "private"
    target.mkdir(mode=0o700)
    os.chmod(target, 0o700)
    mt5fn.save_pretrained(params, CFG, target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700


@pytest.mark.parametrize("kind", ["old", "tmp", "new"])
def test_a_users_folder_with_a_leftover_like_name_is_kept(tmp_path, params, kind):
    mine = tmp_path / f".model.{kind}-backup"
    mine.mkdir()
    (mine / "precious.txt").write_text("mine")
    mt5fn.save_pretrained(params, CFG, tmp_path / "model")
    assert (mine / "precious.txt").read_text() == "mine"


def test_a_stale_old_copy_is_not_resurrected(tmp_path, params):
    mt5fn.save_pretrained(params, CFG, tmp_path / "model")
    target = str(tmp_path / "model")
    os.rename(target, str(tmp_path / ".model.old-1-deadbeef"))  # as a killed fallback swap's old half
    with pytest.raises(FileNotFoundError):
        mt5fn.load_pretrained(target)
    assert not os.path.exists(target)


def test_a_killed_swap_is_still_finished_by_load(tmp_path, params, monkeypatch):
    """The recovery that is wanted: a kill between the two fallback renames; the new version moves in."""
    mt5fn.save_pretrained(params, CFG, tmp_path / "model")
    monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)

    def die(name):
        if name == "moved-aside":
            raise KeyboardInterrupt

    monkeypatch.setattr(_atomic, "_step", die)
    with pytest.raises(KeyboardInterrupt):
        mt5fn.save_pretrained(params, CFG.replace(eos_token_id=2), tmp_path / "model")
    monkeypatch.undo()
    cfg, _ = mt5fn.load_pretrained(tmp_path / "model")
    assert cfg.eos_token_id == 2


def test_saving_into_the_cwd_keeps_the_cwd_valid(tmp_path, params, monkeypatch):
    target = tmp_path / "here"
    mt5fn.save_pretrained(params, CFG, target)
    monkeypatch.chdir(target)
    mt5fn.save_pretrained(params, CFG, ".")
    assert os.path.samefile(os.getcwd(), target)
    assert os.path.isfile("config.json")


def test_a_mount_point_inside_a_save_target_is_refused(tmp_path, params, monkeypatch):
    target = tmp_path / "model"
    mt5fn.save_pretrained(params, CFG, target)
    (target / "mnt").mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: os.path.basename(p) == "mnt" or real(p))
    with pytest.raises(OSError, match="mount point"):
        mt5fn.save_pretrained(params, CFG, target)
    assert (target / "mnt").is_dir()


# ------------------------------------------------------------------ encodings and JSON
def _read(path, mode="span"):
    return read_records([str(path)], Fields(mode=mode)).items


def test_bom_is_stripped_in_every_reader(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfhello\n")
    assert _read(tmp_path / "a.txt") == ["hello"]
    (tmp_path / "a.tsv").write_bytes(b"\xef\xbb\xbfinput\ttarget\nx\ty\n")
    assert _read(tmp_path / "a.tsv", "supervised") == [("x", "y")]
    (tmp_path / "a.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "one"}\n{"text": "two"}\n')
    assert _read(tmp_path / "a.jsonl") == ["one", "two"]
    (tmp_path / "a.json").write_bytes(b'\xef\xbb\xbf[{"text": "one"}]')
    assert _read(tmp_path / "a.json") == ["one"]
    (tmp_path / "c.json").write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert read_json(tmp_path / "c.json") == {"a": 1}


@pytest.mark.parametrize("encoding,name", [("utf-16", "UTF-16"), ("utf-32", "UTF-32")])
def test_utf16_and_utf32_are_refused_naming_file_and_encoding(tmp_path, encoding, name):
    (tmp_path / "a.txt").write_bytes("hello\nworld\n".encode(encoding))
    with pytest.raises(ValueError, match=f"a.txt.*{name}"):
        _read(tmp_path / "a.txt")


def test_nul_bytes_are_refused_with_the_line(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"fine\nbad\x00line\n")
    with pytest.raises(ValueError, match=r"a.txt:2.*NUL"):
        _read(tmp_path / "a.txt")


def test_deep_json_is_a_value_error_naming_the_file(tmp_path):
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="config.json.*nest"):
        read_json(tmp_path / "config.json")


# ------------------------------------------------------------------ eos lists, storage, work
def test_eos_token_id_list_is_kept(tmp_path):
    cfg = mt5fn.MT5Config.from_hf({**CFG.to_hf(), "eos_token_id": [3, 1]})
    assert cfg.eos_token_id == 3 and cfg.eos_token_ids == (3, 1)
    assert cfg.to_hf()["eos_token_id"] == [3, 1]
    assert mt5fn.MT5Config.from_hf(cfg.to_hf()) == cfg


@pytest.mark.parametrize("mode", ["greedy", "sample", "beam"])
@pytest.mark.parametrize("prepared", [False, True])
def test_generation_stops_at_any_listed_eos(params, mode, prepared):
    ids = torch.tensor([[5, 6, 7, 1]])
    kwargs = dict(max_new_tokens=6)
    if mode == "sample":
        kwargs.update(do_sample=True, generator=torch.Generator().manual_seed(0))
    if mode == "beam":
        kwargs.update(num_beams=2)
    plain = mt5fn.generate(params, CFG, ids, **{**kwargs, "generator": torch.Generator().manual_seed(0)}
                           if mode == "sample" else kwargs)
    second = int(plain[0, 2]) if plain.shape[1] > 2 else int(plain[0, 1])
    stop = int(plain[0, 1])
    cfg = CFG.replace(eos_token_id=(1, stop)) if stop != 1 else CFG.replace(eos_token_id=(1, second))
    tree = mt5fn.prepare_decoding(params, cfg) if prepared else params
    if mode == "sample":
        kwargs["generator"] = torch.Generator().manual_seed(0)
    out = mt5fn.generate(tree, cfg, ids, **kwargs)
    first = int(out[0, 1])
    assert first in cfg.eos_token_ids or out.shape[1] <= 3, out
    assert out.shape[1] <= plain.shape[1]
    # stream agrees with generate (greedy)
    if mode == "greedy":
        streamed = torch.stack(list(mt5fn.stream(tree, cfg, ids, max_new_tokens=6)), dim=1)
        assert torch.equal(streamed, out[:, 1:])


def test_aliased_tensors_in_a_bin_are_copied_apart(tmp_path):
    from mt5fn.checkpoint._weights import load_bin

    base = torch.randn(4, 4)
    torch.save({"a": base, "b": base, "c": base[:2]}, tmp_path / "x.bin")
    state = load_bin(str(tmp_path / "x.bin"))
    pointers = {t.untyped_storage().data_ptr() for t in state.values()}
    assert len(pointers) == 3
    assert torch.equal(state["a"], base) and torch.equal(state["c"], base[:2])


def test_beam_search_work_is_bounded(params, monkeypatch):
    monkeypatch.setenv("MT5FN_MAX_WORK", "1000000")
    with pytest.raises(ValueError, match="MT5FN_MAX_WORK"):
        mt5fn.generate(params, CFG, torch.tensor([[5, 6, 1]]), max_new_tokens=200, num_beams=200)


def test_lora_init_runs_the_preflight(params):
    with pytest.raises(ValueError, match="rank"):
        mt5fn.lora.init(params, CFG, rank=10**9, alpha=1)


def test_encode_out_onto_a_fifo_is_one_line_and_leaves_it(tmp_path):
    """The command-line face of the output rule (a FIFO, not /dev/null: a run of this test against a
    library without the rule must not replace a real device)."""
    import contextlib
    import io

    import spm
    from mt5fn.cli import main

    tokenizer = mt5fn.Tokenizer.from_pretrained(spm.spiece_dir())
    cfg = CFG.replace(vocab_size=len(tokenizer))
    mt5fn.save_pretrained(mt5fn.init_params(cfg, seed=0), cfg, tmp_path / "m", tokenizer=tokenizer)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["encode", "--model", str(tmp_path / "m"), "--out", str(fifo), "hi"])
    assert code != 0 and len(err.getvalue().splitlines()) == 1 and "FIFO" in err.getvalue()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# ------------------------------------------------------------------ found by the thorough profile (2026-12-05)
def test_stream_runs_the_pre_flight_before_encoding():
    """``stream`` encodes through the unchecked encoder: its own pre-flight must refuse a huge input."""
    import mt5fn as _mt5fn

    cfg = _mt5fn.MT5Config(vocab_size=8, d_model=4, d_kv=2, d_ff=8, num_layers=1, num_heads=2,
                           relative_attention_num_buckets=4, relative_attention_max_distance=3)
    params = _mt5fn.init_params(cfg, seed=0)
    ids = torch.zeros(1, 10 ** 6, dtype=torch.long)
    with pytest.raises(ValueError, match="input_ids"):
        _mt5fn.stream(params, cfg, ids, max_new_tokens=1)


def test_a_float_eos_id_is_refused_even_when_it_equals_the_listed_one():
    import mt5fn as _mt5fn

    cfg = _mt5fn.MT5Config(vocab_size=8, d_model=4, d_kv=2, d_ff=8, num_layers=1, num_heads=2,
                           relative_attention_num_buckets=4, relative_attention_max_distance=3)
    with pytest.raises(ValueError, match="eos_token_id must be"):
        cfg.replace(eos_token_id=1.0)


def test_any_unpickler_failure_on_a_bin_is_a_value_error_naming_it(tmp_path, monkeypatch):
    from mt5fn.checkpoint._weights import load_bin

    file = tmp_path / "adapter_model.bin"
    file.write_bytes(b"garbage")

    def broken(*args, **kwargs):
        raise IndexError("pop from empty list")

    monkeypatch.setattr(torch, "load", broken)
    with pytest.raises(ValueError, match=r"adapter_model.bin: not a readable PyTorch checkpoint \(IndexError"):
        load_bin(str(file))


# ------------------------------------------------------------------ the last findings (int8 gradients, tokenizer
# files, disk full, FIFOs, size-like options, generation_config.json)
def _int8_forms():
    """A float tree of in-width 32 (Q8_0 blocks are 32 wide) and the same tree with ``lm_head`` in each int8
    form: weight-only int8, GGUF's Q8_0 and, where oneDNN has it, int8 x int8."""
    from mt5fn.kernels import _int8_dynamic

    cfg = CFG.replace(d_model=32, d_kv=8, d_ff=32, tie_word_embeddings=False)
    params = mt5fn.init_params(cfg, seed=0)
    head = params["lm_head"]
    scale = head.abs().reshape(cfg.vocab_size, 1, 32).amax(-1) / 127
    forms = {"int8": mt5fn.quantize(params, cfg)["lm_head"],
             "q8_0": {"q8_0": torch.round(head / scale.repeat_interleave(32, 1)).to(torch.int8), "scale": scale}}
    if _int8_dynamic.available():
        forms["int8-dynamic"] = _int8_dynamic.pack(forms["int8"]["int8"], forms["int8"]["scale"])
    return cfg, params, forms


def test_gradients_through_int8_leaves_are_refused_naming_the_leaf():
    """Torch's own errors ("only Tensors of floating point dtype can require gradients", "derivative for
    aten::_weight_int8pack_mm is not implemented") name no leaf; the validation layer does, in every form."""
    from mt5fn.training import train_step

    cfg, params, forms = _int8_forms()
    ids = torch.tensor([[5, 6, 7, 1]])
    batch = {"input_ids": ids, "labels": ids}
    for form, leaf in forms.items():
        tree = {**params, "lm_head": leaf}
        # the form's own scale asked to learn
        wants = {**params, "lm_head": {key: part.detach().clone().requires_grad_(part.is_floating_point())
                                       for key, part in leaf.items()}}
        with pytest.raises(TypeError, match=rf"params: lm_head is an int8 weight leaf \('{form}' form\).*"
                                            "inference-only"):
            mt5fn.loss(wants, cfg, ids, ids)
        # float parts differentiated, the backward would run through the int8 product
        grads_for = {**tree, "shared": params["shared"].detach().clone().requires_grad_()}
        with pytest.raises(TypeError, match=r"params: lm_head is an int8 weight leaf and the call differentiates "
                                            r"\(shared requires grad\).*inference-only"):
            mt5fn.loss(grads_for, cfg, ids, ids)
        with pytest.raises(TypeError, match=r"params: lm_head is an int8 weight leaf; train_step.*inference-only"):
            train_step(tree, cfg, batch)
        with pytest.raises(TypeError, match=r"params: lm_head is an int8 weight leaf"):
            train_step(tree, cfg, batch, trainable=lambda path: "norm" in path)
        with pytest.raises(TypeError, match=r"params: lm_head is an int8 weight leaf"):
            torch.func.grad(lambda shared: mt5fn.loss({**tree, "shared": shared}, cfg, ids, ids))(params["shared"])
        # inference on the same trees is untouched, and so are the calls that never differentiate
        with torch.no_grad():
            assert torch.isfinite(mt5fn.loss(wants, cfg, ids, ids))
        assert torch.isfinite(mt5fn.loss(tree, cfg, ids, ids))
        for grad_tree in (wants, grads_for):
            assert mt5fn.generate(grad_tree, cfg, ids, max_new_tokens=2).shape[0] == 1
            assert mt5fn.generate(mt5fn.prepare_decoding(grad_tree, cfg, rows=1), cfg, ids, max_new_tokens=2).shape[0] == 1
        if form == "int8":
            assert mt5fn.dequantize(grads_for, cfg)["lm_head"].dtype == params["shared"].dtype  # the way out


def _tokenizer_folder(tmp_path, edit, tokenizer_class=None):
    """A saved T5 tokenizer folder whose tokenizer.json went through ``edit`` (and, with
    ``tokenizer_class``, a tokenizer_config.json naming another class)."""
    import spm

    folder = tmp_path / "tok"
    mt5fn.Tokenizer.from_pretrained(spm.spiece_dir()).save_pretrained(folder)
    os.remove(folder / "spiece.model")
    data = json.loads((folder / "tokenizer.json").read_text())
    edit(data)
    (folder / "tokenizer.json").write_text(json.dumps(data))
    if tokenizer_class:
        config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": tokenizer_class}))
    return folder


@pytest.mark.parametrize("bad_id", ["7", 1.5, None, -1, True])
def test_an_added_token_id_that_is_no_int_names_the_file_and_field(tmp_path, bad_id):
    def edit(data):
        data["added_tokens"][1]["id"] = bad_id

    folder = _tokenizer_folder(tmp_path, edit)
    with pytest.raises(ValueError, match=r"tokenizer\.json: added_tokens\[1\] .* has 'id' .*non-negative integer"):
        mt5fn.Tokenizer.from_pretrained(folder)


def test_a_tokenizer_json_whose_regex_panics_is_a_value_error_naming_it(tmp_path):
    """A non-T5 tokenizer.json runs the file's own pipeline: a Split whose regex backtracks past Oniguruma's
    retry limit makes ``tokenizers`` panic (pyo3's ``PanicException``, a ``BaseException`` that ``except
    Exception`` misses) on the first long enough text."""
    def edit(data):
        data["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(a|a)*[^a]"}, "behavior": "Isolated",
                                 "invert": False}

    tokenizer = mt5fn.Tokenizer.from_pretrained(_tokenizer_folder(tmp_path, edit, "PreTrainedTokenizerFast"))
    assert tokenizer.encode("b")  # the file is read; short texts pass
    with pytest.raises(ValueError, match=r"tokenizer\.json: the tokenizers library failed to encode .*"
                                         r"PanicException: .*retry-limit"):
        tokenizer.encode("a" * 40)
    with pytest.raises(ValueError, match=r"tokenizer\.json"):
        tokenizer.batch_encode(["a" * 40, "b"])


def test_a_tokenizer_json_the_library_cannot_build_is_a_value_error_naming_it(tmp_path):
    def edit(data):
        data["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated",
                                 "invert": False}

    with pytest.raises(ValueError, match=r"tokenizer\.json: not a tokenizer the tokenizers library can read"):
        mt5fn.Tokenizer.from_pretrained(_tokenizer_folder(tmp_path, edit, "PreTrainedTokenizerFast"))


def _disk_full_writer(monkeypatch, after: int = 0):
    """``safetensors``' writer fails as it does on a full disk (a ``SafetensorError`` naming the os error, no
    file) from its ``after + 1``-th call on."""
    import safetensors.torch
    from safetensors import SafetensorError

    real, calls = safetensors.torch.save_file, []

    def full(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", full)


def _digests(folder):
    import hashlib

    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize("where", ["weights", "fsync"])
def test_a_disk_that_fills_during_convert_is_one_line_naming_the_output(tmp_path, params, monkeypatch, where):
    import errno

    import train_fixtures

    mt5fn.save_pretrained(params, CFG, tmp_path / "src")
    assert train_fixtures.run_cli("convert", tmp_path / "src", tmp_path / "dst")[0] == 0
    before = _digests(tmp_path / "dst")
    if where == "weights":
        _disk_full_writer(monkeypatch)
    else:  # a delayed allocation failing at fsync: a bare OSError naming no file
        def full(root):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(_atomic, "fsync_tree", full)
    code, err = train_fixtures.run_cli("convert", tmp_path / "src", tmp_path / "dst", "--dtype", "float16")
    assert code != 0 and len(err.splitlines()) == 1, err
    assert err.startswith("mt5fn convert: error:") and "No space left on device" in err
    assert str(tmp_path / "dst") in err and ".tmp-" not in err, err
    assert _digests(tmp_path / "dst") == before  # the previous version, whole
    assert sorted(os.listdir(tmp_path)) == ["dst", "src"]  # no temporary folder left


def test_a_disk_that_fills_during_a_training_save_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import train_fixtures

    data = train_fixtures.write_data(str(tmp_path / "data"), count=8)
    out = tmp_path / "run"
    _disk_full_writer(monkeypatch, after=1)  # the step-2 save writes; the step-4 one finds the disk full
    code, err = train_fixtures.run_cli("train", "--data", data["pairs"], "--out", out, "--config", data["config"],
                                       "--tokenizer", _spiece_dir(), "--steps", "4", "--save-every", "2",
                                       "--batch-size", "2", "--mode", "supervised")
    errors = [line for line in err.splitlines() if "error" in line]
    assert code != 0 and len(errors) == 1 and "Traceback" not in err, err
    assert "No space left on device" in errors[0] and str(out / "step-00000004") in errors[0], errors
    assert (out / "latest").read_text().strip() == "step-00000002"
    assert sorted(name for name in os.listdir(out) if name.startswith((".", "step"))) == ["step-00000002"]
    cfg, _ = mt5fn.load_pretrained(out / "step-00000002")
    monkeypatch.undo()
    code, err = train_fixtures.run_cli("train", "--data", data["pairs"], "--out", out, "--config", data["config"],
                                       "--tokenizer", _spiece_dir(), "--steps", "4", "--save-every", "2",
                                       "--batch-size", "2", "--mode", "supervised", "--resume")
    assert code == 0, err
    assert (out / "latest").read_text().strip() == "step-00000004"


def _spiece_dir():
    import spm

    return spm.spiece_dir()


@pytest.mark.parametrize("kind", ["path", "config.json in a folder"])
def test_info_on_a_fifo_refuses_at_once_in_one_line(tmp_path, params, kind):
    import subprocess
    import sys

    if kind == "path":
        path = tmp_path / "weights.safetensors"
        os.mkfifo(path)
    else:
        path = tmp_path / "model"
        mt5fn.save_pretrained(params, CFG, path)
        os.remove(path / "config.json")
        os.mkfifo(path / "config.json")
    try:  # a FIFO nobody writes to: a reader that opens it blocks; the timeout fails the test, not the suite
        run = subprocess.run([sys.executable, "-m", "mt5fn", "info", str(path)], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"mt5fn info {path} blocked on the FIFO")
    assert run.returncode != 0 and len(run.stderr.splitlines()) == 1, run.stderr
    assert "FIFO" in run.stderr and ("weights.safetensors" in run.stderr or "config.json" in run.stderr)


def test_saved_weights_follow_the_umask_like_every_other_file(tmp_path, params):
    """safetensors' own writer creates 0600 files: a checkpoint's weights were private while its
    config.json followed the umask."""
    old = os.umask(0o022)
    try:
        mt5fn.save_pretrained(params, CFG, tmp_path / "model")
        mt5fn.save_pretrained(params, CFG, tmp_path / "sharded", max_shard_size=2000)
    finally:
        os.umask(old)
    for folder in ("model", "sharded"):
        modes = {name: stat.S_IMODE(os.stat(tmp_path / folder / name).st_mode)
                 for name in os.listdir(tmp_path / folder)}
        assert set(modes.values()) == {0o644}, modes


def test_generation_config_json_keeps_every_eos_id(tmp_path, params):
    """save_pretrained wrote only the first of several EOS ids into generation_config.json, which is where
    transformers' ``generate`` reads them; the list goes there now, and load_pretrained reads it back."""
    transformers = pytest.importorskip("transformers")
    cfg = CFG.replace(eos_token_id=(3, 1))
    mt5fn.save_pretrained(params, cfg, tmp_path / "model")
    written = json.loads((tmp_path / "model" / "generation_config.json").read_text())
    assert written["eos_token_id"] == [3, 1]
    assert transformers.GenerationConfig.from_pretrained(tmp_path / "model").eos_token_id == [3, 1]
    loaded, _ = mt5fn.load_pretrained(tmp_path / "model")
    assert loaded.eos_token_ids == (3, 1) and loaded == cfg
    # a list only in generation_config.json (config.json keeps one int, as older writers do) is read too
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(json.dumps({**config, "eos_token_id": 3}))
    assert mt5fn.load_pretrained(tmp_path / "model")[0].eos_token_ids == (3, 1)
    (tmp_path / "model" / "generation_config.json").write_text(json.dumps({**written, "eos_token_id": ["3"]}))
    with pytest.raises(ValueError, match=r"generation_config\.json: eos_token_id \['3'\]"):
        mt5fn.load_pretrained(tmp_path / "model")
    # one id stays an int, as transformers writes it
    mt5fn.save_pretrained(params, CFG, tmp_path / "single")
    assert json.loads((tmp_path / "single" / "generation_config.json").read_text())["eos_token_id"] == 1


def _train_subprocess(tmp_path, *extra, timeout=120):
    """``mt5fn train`` in a real process with the memory bound lifted (so only the time bound under test
    can stop it), killed after ``timeout`` seconds: a loop that runs N times fails the test, not the suite."""
    import subprocess
    import sys

    import spm
    import train_fixtures

    data = train_fixtures.write_data(str(tmp_path / "data"), count=8)
    argv = [sys.executable, "-m", "mt5fn", "train", "--config", data["config"], "--tokenizer", spm.spiece_dir(),
            "--out", str(tmp_path / "run"), "--steps", "1", "--batch-size", "2", *extra]
    argv = [data["pairs"] if a == "{pairs}" else data["text"] if a == "{text}" else a for a in argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MT5FN_MAX_BUFFER_BYTES": str(10 ** 15)}
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mt5fn train {' '.join(extra)} still ran after {timeout} s")


@pytest.mark.parametrize("mode", ["supervised", "span"])
def test_a_shuffle_buffer_beyond_the_data_is_refused_after_one_pass(tmp_path, mode):
    """``--shuffle-buffer 10**6`` over 8 records fits the memory bound (lifted here) but went round the data
    10**5 times filling the buffer before the first step; now the fill stops within a couple of passes."""
    data = "{pairs}" if mode == "supervised" else "{text}"
    run = _train_subprocess(tmp_path, "--data", data, "--mode", mode, "--streaming", "--shuffle-buffer", "1000000")
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert run.returncode != 0 and len(errors) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "--shuffle-buffer 1000000" in errors[0] and "per pass" in errors[0], errors


def test_a_shuffle_buffer_the_data_fills_still_trains(tmp_path):
    import spm
    import train_fixtures

    data = train_fixtures.write_data(str(tmp_path / "data"), count=8)
    code, err = train_fixtures.run_cli("train", "--data", data["pairs"], "--mode", "supervised", "--streaming",
                                       "--shuffle-buffer", "8", "--config", data["config"], "--tokenizer",
                                       spm.spiece_dir(), "--out", tmp_path / "run", "--steps", "3",
                                       "--batch-size", "2", "--seed", "0")
    assert code == 0, err


def test_a_huge_max_input_length_costs_only_the_data_it_holds(tmp_path):
    """With the memory bound lifted, ``--max-input-length 30000`` over short records must cost what the
    records cost: batches are as long as their longest example and every per-token loop runs over the
    tokens the data has (a naive padding to the option, or a loop up to it, would run out of the time)."""
    run = _train_subprocess(tmp_path, "--data", "{pairs}", "--mode", "supervised", "--max-input-length", "30000",
                            timeout=90)
    assert run.returncode == 0, run.stderr


def test_a_deeply_nested_tokenizer_json_is_a_value_error_naming_it(tmp_path):
    """The config readers bounded their nesting; tokenizer.json was parsed on its own and ended in a
    RecursionError naming no file."""
    def edit(data):
        data.clear()

    folder = _tokenizer_folder(tmp_path, edit)
    (folder / "tokenizer.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"tokenizer\.json: JSON nested"):
        mt5fn.Tokenizer.from_pretrained(folder)


def test_a_tokenizer_panic_on_the_command_line_is_one_line_naming_the_file(tmp_path):
    """The command-line face of the panic test above: ``generate`` on a model whose tokenizer.json panics."""
    import spm
    import train_fixtures

    tokenizer = mt5fn.Tokenizer.from_pretrained(spm.spiece_dir())
    cfg = CFG.replace(vocab_size=len(tokenizer))
    model = tmp_path / "m"
    mt5fn.save_pretrained(mt5fn.init_params(cfg, seed=0), cfg, model, tokenizer=tokenizer)
    os.remove(model / "spiece.model")
    data = json.loads((model / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(a|a)*[^a]"}, "behavior": "Isolated",
                             "invert": False}
    (model / "tokenizer.json").write_text(json.dumps(data))
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "PreTrainedTokenizerFast"}))
    code, err = train_fixtures.run_cli("generate", "--model", model, "--max-new-tokens", "2", "a" * 40)
    assert code != 0 and len(err.splitlines()) == 1, err
    assert err.startswith("mt5fn generate: error:") and "tokenizer.json" in err and "PanicException" in err, err
    # a real process: Rust prints the panic itself ("thread ... panicked at ...") on file descriptor 2
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "mt5fn", "generate", "--model", str(model), "--max-new-tokens",
                          "2", "b", "a" * 40], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode != 0 and run.stderr.count("\n") == 1 and "panicked" not in run.stderr, run.stderr
    assert run.stderr.startswith("mt5fn generate: error:") and "tokenizer.json" in run.stderr


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_trainer_state_is_refused_in_one_line_without_running_it(tmp_path):
    import spm
    import train_fixtures

    data = train_fixtures.write_data(str(tmp_path / "data"), count=8)
    out = tmp_path / "run"
    common = ["--data", data["pairs"], "--mode", "supervised", "--config", data["config"], "--tokenizer",
              spm.spiece_dir(), "--out", out, "--batch-size", "2"]
    assert train_fixtures.run_cli("train", *common, "--steps", "1")[0] == 0
    marker = tmp_path / "ran"
    torch.save({"format": 1, "step": 1, "evil": _Payload(marker)}, out / "step-00000001" / "trainer_state.pt")
    code, err = train_fixtures.run_cli("train", *common, "--steps", "2", "--resume")
    errors = [line for line in err.splitlines() if "error" in line]
    assert code != 0 and len(errors) == 1 and "Traceback" not in err, err
    assert "trainer_state" in errors[0] or "step-00000001" in errors[0], errors
    assert not marker.exists()
    assert not (out / "step-00000002").exists()
