"""GGUF files made by llama.cpp's own ``convert_hf_to_gguf.py`` (tests/fixtures/gguf, see make_fixtures.py).

F32 files load bit-equal to the Hugging Face folders they came from, and run exactly as transformers
runs those weights (fp32, eager); F16/BF16/Q8_0 files load as exactly ``gguf``'s own dequantization of
each tensor; bad files are ValueErrors naming the file.
"""

from __future__ import annotations

import os
import shutil
import warnings

import pytest
import torch

import mt5fn
from mt5fn.model._params import flatten_params
from reference import hf_model
from test_checkpoint import ATOL

gguf = pytest.importorskip("gguf")
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "gguf")
MODELS = ["t5-relu", "t5-gated", "umt5", "t5-encoder"]


def load(file: str, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mt5fn.load_pretrained(os.path.join(HERE, file), **kwargs)


@pytest.mark.parametrize("name", MODELS)
def test_f32_loads_the_folder_it_came_from(name):
    ref_cfg, ref = mt5fn.load_pretrained(os.path.join(HERE, name))
    with pytest.warns(UserWarning, match="relative_attention_max_distance=128.*config="):
        cfg, params = mt5fn.load_pretrained(os.path.join(HERE, f"{name}-f32.gguf"))
    if name == "t5-encoder":  # decoder-only setting; an encoder never uses it
        cfg = cfg.replace(scale_decoder_outputs=ref_cfg.scale_decoder_outputs)
    assert cfg == ref_cfg
    got, want = flatten_params(params), flatten_params(ref)
    assert set(got) == set(want)
    for path in want:
        assert got[path].dtype == torch.float32 and torch.equal(got[path], want[path]), path


@pytest.mark.parametrize("name", ["t5-relu", "t5-gated", "umt5"])
def test_f32_runs_as_transformers(name):
    cfg, params = load(f"{name}-f32.gguf")
    reference = hf_model(cfg, params)
    ids = torch.tensor([[5, 17, 42, 99, 1], [7, 8, 9, 1, 0]])
    mask = (ids != 0).long()
    dec = torch.tensor([[0, 3, 4], [0, 5, 6]])
    with torch.no_grad():
        want = reference(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        got = mt5fn.forward(params, cfg, ids, dec, attention_mask=mask)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)  # the weights are equal; kernels may round apart
        tokens = mt5fn.generate(params, cfg, ids, mask, max_new_tokens=6)
        hf_tokens = reference.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(tokens[:, : hf_tokens.shape[1]], hf_tokens)


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_rounded_files_load_as_their_dequantized_tensors(outtype):
    file = os.path.join(HERE, f"t5-gated-{outtype}.gguf")
    reader = gguf.GGUFReader(file)
    cfg, params = load(file, dtype=torch.float32)
    hf = mt5fn.to_hf_state_dict(params, cfg)
    from mt5fn.checkpoint._gguf_read import hf_names

    for name, tensor in hf_names(reader, file).items():
        want = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype("float32"))
        assert torch.equal(hf[name], want.reshape(hf[name].shape)), name
    if outtype != "q8_0":  # stored as is by default (norms promoted; wo stays float32 in float16)
        _, kept = load(file)
        assert kept["shared"].dtype == {"f16": torch.float16, "bf16": torch.bfloat16}[outtype]


def test_encoder_only_and_folder_of_one_file(tmp_path):
    shutil.copy(os.path.join(HERE, "t5-gated-f32.gguf"), tmp_path / "model.gguf")
    cfg, params = load(str(tmp_path), encoder_only=True)
    assert set(params) == {"shared", "encoder"}
    shutil.copy(os.path.join(HERE, "umt5-f32.gguf"), tmp_path / "other.gguf")
    with pytest.raises(ValueError, match="several GGUF"):
        load(str(tmp_path))


def test_config_overrides_the_assumptions():
    cfg, _ = load("t5-gated-f32.gguf")
    given = cfg.replace(relative_attention_max_distance=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, _ = mt5fn.load_pretrained(os.path.join(HERE, "t5-gated-f32.gguf"), config=given)
    assert got.relative_attention_max_distance == 64


def test_bad_files(tmp_path):
    source = open(os.path.join(HERE, "t5-gated-f32.gguf"), "rb").read()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="bad.gguf"):
        mt5fn.load_pretrained(str(bad))
    bad.write_bytes(source[: len(source) // 2])  # truncated: tensors end past the file
    with pytest.raises(ValueError, match="bad.gguf"):
        mt5fn.load_pretrained(str(bad))
    bad.write_bytes(source[:4] + source[4:8] + (2**62).to_bytes(8, "little") + source[16:])  # absurd count
    with pytest.raises(ValueError, match="bad.gguf"):
        mt5fn.load_pretrained(str(bad))
    writer = gguf.GGUFWriter(str(tmp_path / "llama.gguf"), "llama")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 32).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"llama\.gguf.*'llama'"):
        mt5fn.load_pretrained(str(tmp_path / "llama.gguf"))


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(os.path.join(HERE, "t5-gated-f32.gguf"), folder / "model.gguf")
    with pytest.raises(ValueError, match="model.gguf"):
        load(str(folder))


def test_tokenizer_from_the_file_equals_the_spiece_model():
    import sentencepiece as spm
    from spm import CORPUS

    ours = mt5fn.Tokenizer.from_pretrained(os.path.join(HERE, "t5-gated-q8_0.gguf"))
    theirs = spm.SentencePieceProcessor(model_file=os.path.join(HERE, "spiece.model"))
    for text in CORPUS + ["  two  spaces ", "Unseen ✓ characters"]:  # the model knows Latin script only
        assert ours.encode(text) == theirs.encode(text) + [1], text
    assert len(ours) == 128 and ours.sentinel_id(0) == 127  # the converter's padding rows hold the sentinels


def _layout(file: str) -> tuple[dict, list]:
    import numpy as np

    reader = gguf.GGUFReader(file)
    keys = {k: reader.fields[k].contents() for k in reader.fields
            if not k.startswith("GGUF.") and k not in ("general.name", "general.size_label")}
    tensors = [(t.name, t.tensor_type.name, tuple(t.shape.tolist()), np.asarray(t.data).tobytes())
               for t in reader.tensors]
    return keys, tensors


@pytest.mark.parametrize("name, outtype", [("t5-relu", "f32"), ("t5-gated", "f32"), ("t5-gated", "f16"),
                                           ("t5-gated", "bf16"), ("t5-gated", "q8_0"), ("umt5", "f32"),
                                           ("t5-encoder", "f32")])
def test_written_files_are_the_converters(tmp_path, name, outtype):
    """Same keys, tensor names, order, types, shapes and bytes as convert_hf_to_gguf.py from the same folder."""
    cfg, params = mt5fn.load_pretrained(os.path.join(HERE, name))
    tok = mt5fn.Tokenizer.from_pretrained(os.path.join(HERE, "spiece.model"))
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "q8_0": "q8_0"}[outtype]
    out = tmp_path / f"{name}.gguf"
    mt5fn.save_pretrained(params, cfg, str(out), dtype=dtype, tokenizer=tok)
    ours, theirs = _layout(str(out)), _layout(os.path.join(HERE, f"{name}-{outtype}.gguf"))
    assert ours[0] == theirs[0]
    assert [t[:3] for t in ours[1]] == [t[:3] for t in theirs[1]]
    assert [t[3] for t in ours[1]] == [t[3] for t in theirs[1]]
    assert not [p for p in os.listdir(tmp_path) if p != out.name]  # no temporary file left behind


def test_q8_0_stays_8_bit_and_computes_as_its_dequantized_weights():
    from mt5fn.kernels import linear_form

    cfg, params = load("t5-gated-q8_0.gguf")
    _, dense = load("t5-gated-q8_0.gguf", dtype=torch.float32)
    q = params["encoder"]["blocks"][0]["attn"]["q"]
    assert linear_form(q) == "q8_0" and q["q8_0"].dtype == torch.int8 and q["scale"].shape == (32, 1)
    ids, dec = torch.tensor([[5, 17, 42, 99, 1]]), torch.tensor([[0, 3, 4]])
    with torch.no_grad():
        assert torch.equal(mt5fn.forward(params, cfg, ids, dec), mt5fn.forward(dense, cfg, ids, dec))
        want = mt5fn.generate(dense, cfg, ids, max_new_tokens=6)
        assert torch.equal(mt5fn.generate(params, cfg, ids, max_new_tokens=6), want)
        assert torch.equal(mt5fn.generate(mt5fn.prepare_decoding(params, cfg), cfg, ids, max_new_tokens=6), want)


def test_cli_info_convert_generate_encode(tmp_path, capsys):
    from mt5fn.cli import main

    q8 = os.path.join(HERE, "t5-gated-q8_0.gguf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["info", q8]) == 0
        out = capsys.readouterr().out
        assert "architecture 't5'" in out and "Q8_0 x 38" in out and "F32 x 12" in out and "d_model: 32" in out
        folder = tmp_path / "src"
        shutil.copytree(os.path.join(HERE, "t5-gated"), folder)
        shutil.copy(os.path.join(HERE, "spiece.model"), folder / "spiece.model")
        assert main(["convert", str(folder), str(tmp_path / "out.gguf"), "--dtype", "q8_0"]) == 0
        ours, theirs = _layout(str(tmp_path / "out.gguf")), _layout(q8)
        assert ours == theirs
        capsys.readouterr()
        assert main(["generate", "--model", q8, "--max-new-tokens", "4", "Das Haus ist wunderbar."]) == 0
        assert capsys.readouterr().out.strip()
        assert main(["encode", "--model", os.path.join(HERE, "t5-encoder-f32.gguf"), "--out",
                     str(tmp_path / "e.safetensors"), "Das Haus"]) == 0
    assert (tmp_path / "e.safetensors").exists()


def _requantized(src: str, out: str, qtype_name: str) -> None:
    """``src`` with every 2-D tensor of whole 32-blocks re-quantized to ``qtype_name`` (as llama-quantize would)."""
    import numpy as np

    reader = gguf.GGUFReader(src)
    qtype = gguf.GGMLQuantizationType[qtype_name]
    writer = gguf.GGUFWriter(out, reader.fields["general.architecture"].contents())
    for key, item in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = item.contents()
        kind = item.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
        else:
            writer.add_key_value(key, value, kind)
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if data.ndim == 2 and data.shape[-1] % 32 == 0 and "norm" not in tensor.name:
            writer.add_tensor(tensor.name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(tensor.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("qtype", ["Q4_0", "Q5_1"])
def test_other_types_dequantize_on_load(tmp_path, qtype):
    out = str(tmp_path / f"m-{qtype}.gguf")
    _requantized(os.path.join(HERE, "t5-gated-f32.gguf"), out, qtype)
    cfg, params = load(out, dtype=torch.float32)
    hf = mt5fn.to_hf_state_dict(params, cfg)
    from mt5fn.checkpoint._gguf_read import hf_names

    reader = gguf.GGUFReader(out)
    for name, tensor in hf_names(reader, out).items():
        want = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype("float32"))
        assert torch.equal(hf[name], want.reshape(hf[name].shape)), name
    _, default = load(out)  # bfloat16 where the CPU computes in it, else float32
    assert default["shared"].dtype in (torch.bfloat16, torch.float32)


def test_q8_0_position_table_is_dequantized(tmp_path):
    """With 32 heads the position table has whole 32-blocks, so the converter stores it Q8_0 too."""
    cfg = mt5fn.MT5Config(vocab_size=64, d_model=32, d_kv=1, d_ff=64, num_layers=1, num_heads=32,
                          relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", model_type="t5")
    params = mt5fn.init_params(cfg, seed=0)
    out = str(tmp_path / "h32.gguf")
    mt5fn.save_pretrained(params, cfg, out, dtype="q8_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert types["enc.blk.0.attn_rel_b.weight"] == "Q8_0"
    got_cfg, tree = load(out)
    _, dense = load(out, dtype=torch.float32)
    assert isinstance(tree["encoder"]["rel_bias"], torch.Tensor)
    ids, dec = torch.tensor([[5, 6, 7, 1]]), torch.tensor([[0, 3]])
    with torch.no_grad():
        assert torch.equal(mt5fn.forward(tree, got_cfg, ids, dec), mt5fn.forward(dense, got_cfg, ids, dec))


def test_preflight_bounds_dequantization(tmp_path, monkeypatch):
    out = str(tmp_path / "q4.gguf")
    _requantized(os.path.join(HERE, "t5-gated-f32.gguf"), out, "Q4_0")
    monkeypatch.setenv("MT5FN_MAX_BUFFER_BYTES", "1000")
    with pytest.raises(ValueError, match="q4.gguf.*MT5FN_MAX_BUFFER_BYTES|q4.gguf"):
        load(out, dtype=torch.float32)


def test_lying_string_length(tmp_path):
    source = bytearray(open(os.path.join(HERE, "t5-encoder-f32.gguf"), "rb").read())
    # the first key's length field follows magic (4), version (4), tensor count (8), kv count (8)
    source[24:32] = (2**60).to_bytes(8, "little")
    bad = tmp_path / "lying.gguf"
    bad.write_bytes(bytes(source))
    with pytest.raises(ValueError, match="lying.gguf"):
        mt5fn.load_pretrained(str(bad))


def test_transformers_5_24_misreads_these_files():
    """The evidence behind the issue: transformers' own GGUF reader on the converter's files (pinned 5.24).
    A gated untied T5 is read as relu and tied; a relu T5 leaves its FFN input projection unread."""
    transformers = pytest.importorskip("transformers")
    if transformers.__version__ != "5.24.0":
        pytest.skip("measured on transformers 5.24.0")
    transformers.logging.set_verbosity_error()
    ids, dec = torch.tensor([[5, 17, 42, 99, 1]]), torch.tensor([[0, 3, 4]])
    off = {}
    for name in ("t5-relu", "t5-gated", "umt5"):
        cfg, params = mt5fn.load_pretrained(os.path.join(HERE, name))
        theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(HERE, gguf_file=f"{name}-f32.gguf").eval()
        with torch.no_grad():
            want = hf_model(cfg, params)(input_ids=ids, decoder_input_ids=dec).logits
            off[name] = (theirs(input_ids=ids, decoder_input_ids=dec).logits - want).abs().max().item()
        if name == "t5-gated":
            assert theirs.config.feed_forward_proj == "relu"
    assert off["t5-relu"] > 0.5 and off["t5-gated"] > 0.5 and off["umt5"] < 1e-4, off


def test_a_q8_0_file_read_and_written_is_unchanged(tmp_path):
    cfg, params = load("t5-gated-q8_0.gguf")  # Q8_0 leaves
    tok = mt5fn.Tokenizer.from_pretrained(os.path.join(HERE, "t5-gated-q8_0.gguf"))
    out = str(tmp_path / "again.gguf")
    mt5fn.save_pretrained(params, cfg, out, dtype="q8_0", tokenizer=tok)
    ours, theirs = _layout(out), _layout(os.path.join(HERE, "t5-gated-q8_0.gguf"))
    assert ours == theirs
