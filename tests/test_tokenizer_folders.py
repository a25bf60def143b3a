"""Every tokenizer form a T5-family folder has, against transformers' AutoTokenizer on the same folder.

``tokenizer.json`` (as transformers 5 writes it, an older pipeline, and a
non-T5 class used as it is), ByT5 (no file; ``tokenizer_config.json`` names
it), round trips of t5 / mt5 / umt5 model folders through ``AutoTokenizer``
and CTranslate2's converter, padded vocabulary rows in ``mt5fn generate``, and
bad tokenizer folders and texts.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mt5fn
import spm
from mt5fn.cli import main
from test_checkpoint import tiny
from test_tokenizer import STRINGS

BYT5_STRINGS = [*STRINGS, "a </s> b", " <pad> ", "a</s>", "a </s>   ", "</s></s>", "<extra_id_0> x", "x<extra_id_124>",
                "x  <extra_id_3>  y", "<unk>\t<pad>\n", "é😀", "\x00\x7f\xff", "<extra_id_125>", "</s>x</s>"]


@pytest.fixture(scope="module")
def spiece_tok():
    return mt5fn.Tokenizer.from_pretrained(spm.spiece_dir())


def assert_same_as_auto(ours, folder, texts=STRINGS, decode_ids=None):
    import transformers

    auto = transformers.AutoTokenizer.from_pretrained(folder)
    assert len(ours) == len(auto)
    for text in texts:
        ids = ours.encode(text)
        assert ids == auto(text)["input_ids"], text
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == auto.decode(ids, skip_special_tokens=skip), text
    for ids in decode_ids or []:
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == auto.decode(ids, skip_special_tokens=skip), ids
    return auto


def test_tokenizer_json_written_by_transformers(tmp_path):
    import transformers

    ref = transformers.T5Tokenizer.from_pretrained(spm.spiece_dir())
    ref.save_pretrained(tmp_path / "tok")
    assert sorted(os.listdir(tmp_path / "tok")) == ["tokenizer.json", "tokenizer_config.json"]
    tok = mt5fn.Tokenizer.from_pretrained(tmp_path / "tok")
    assert tok.kind == "tokenizer.json" and tok.extra_ids == 100
    assert [tok.sentinel_id(n) for n in (0, 99)] == [399, 300]
    assert_same_as_auto(tok, tmp_path / "tok")


def test_older_tokenizer_json_pipelines_are_read_as_transformers_reads_them(tmp_path):
    """transformers 4's converter wrote another normaliser / pre-tokenizer; transformers 5 rebuilds the
    T5 pipeline from the file's vocabulary and charsmap, and so does mt5fn."""
    import transformers

    transformers.T5Tokenizer.from_pretrained(spm.spiece_dir()).save_pretrained(tmp_path / "tok")
    data = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    data["normalizer"] = {"type": "Sequence", "normalizers": [
        data["normalizer"], {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}
    data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    (tmp_path / "tok" / "tokenizer.json").write_text(json.dumps(data))
    assert_same_as_auto(mt5fn.Tokenizer.from_pretrained(tmp_path / "tok"), tmp_path / "tok")


def test_a_non_t5_tokenizer_json_is_used_as_it_is(tmp_path, spiece_tok):
    spiece_tok.save_pretrained(tmp_path / "tok")
    os.remove(tmp_path / "tok" / "spiece.model")
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps(config))
    tok = mt5fn.Tokenizer.from_pretrained(tmp_path / "tok")
    assert tok.kind == "tokenizer.json"
    assert_same_as_auto(tok, tmp_path / "tok", texts=STRINGS[:40])
    tok.save_pretrained(tmp_path / "again")  # keeps its class, so transformers keeps the file's pipeline
    assert json.loads((tmp_path / "again" / "tokenizer_config.json").read_text())["tokenizer_class"] == \
        "PreTrainedTokenizerFast"
    assert_same_as_auto(mt5fn.Tokenizer.from_pretrained(tmp_path / "again"), tmp_path / "again", texts=STRINGS[:10])


def test_byt5_matches_transformers(tmp_path):
    import transformers

    ours, ref = mt5fn.Tokenizer.byt5(), transformers.ByT5Tokenizer()
    assert len(ours) == len(ref) == 384
    assert ours.sentinel_id(0) == ref.convert_tokens_to_ids("<extra_id_0>")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers warns about a text that already ends in </s>
        for text in BYT5_STRINGS:
            ids = ours.encode(text)
            assert ids == ref(text)["input_ids"], text
            for skip in (False, True):
                assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
    for ids in ([3 + 0xC3], [3 + 0xC3, 3 + 0xA9, 260, 1], [0, 1, 2, 383, 100]):  # a cut UTF-8 sequence drops out
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
    assert ours.decode([104, 400, 105]) == "ef"  # past the vocabulary: nothing


@given(text=st.lists(st.sampled_from(list("ab é😀 \t\n<") + ["</s>", "<pad>", "<unk>", "<extra_id_7>"]),
                     max_size=12).map("".join))
def test_byt5_matches_transformers_on_generated_text(text):
    import warnings

    import transformers

    ref = _byt5_reference(transformers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert mt5fn.Tokenizer.byt5().encode(text) == ref(text)["input_ids"]


_BYT5 = []


def _byt5_reference(transformers):
    if not _BYT5:
        _BYT5.append(transformers.ByT5Tokenizer())
    return _BYT5[0]


def test_byt5_folders_are_recognised_from_their_config(tmp_path):
    """google/byt5-*: model_type t5, no tokenizer file; tokenizer_config.json names ByT5Tokenizer."""
    import transformers

    cfg = tiny("t5-v1_1", vocab_size=384)
    mt5fn.save_pretrained(mt5fn.init_params(cfg), cfg, tmp_path / "byt5")
    (tmp_path / "byt5" / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "ByT5Tokenizer", "extra_ids": 125, "eos_token": "</s>", "pad_token": "<pad>",
         "unk_token": "<unk>"}))
    tok = mt5fn.Tokenizer.from_pretrained(tmp_path / "byt5")
    assert tok.kind == "byt5" and len(tok) == 384
    assert_same_as_auto(tok, tmp_path / "byt5", texts=BYT5_STRINGS[:30])
    out = tmp_path / "saved"
    mt5fn.save_pretrained(mt5fn.init_params(cfg), cfg, out, tokenizer=tok)
    assert isinstance(transformers.AutoTokenizer.from_pretrained(out), transformers.ByT5Tokenizer)
    assert_same_as_auto(mt5fn.Tokenizer.from_pretrained(out), out, texts=BYT5_STRINGS[:30])
    assert mt5fn.Tokenizer.from_pretrained(out).kind == "byt5"


@pytest.mark.parametrize("kind", ["t5", "mt5", "umt5"])
def test_model_folders_round_trip_through_autotokenizer_and_ctranslate2(tmp_path, spiece_tok, kind):
    import ctranslate2

    cfg = tiny(kind, vocab_size=len(spiece_tok))
    folder = tmp_path / "model"
    mt5fn.save_pretrained(mt5fn.init_params(cfg), cfg, folder, tokenizer=spiece_tok)
    assert {"tokenizer.json", "tokenizer_config.json", "spiece.model"} <= set(os.listdir(folder))
    auto = assert_same_as_auto(mt5fn.Tokenizer.from_pretrained(folder), folder, texts=STRINGS[:30])
    without_spiece = tmp_path / "no-spiece"  # tokenizer.json alone is enough for both
    shutil.copytree(folder, without_spiece)
    os.remove(without_spiece / "spiece.model")
    assert_same_as_auto(mt5fn.Tokenizer.from_pretrained(without_spiece), without_spiece, texts=STRINGS[:10])
    ctranslate2.converters.TransformersConverter(str(folder)).convert(str(tmp_path / "ct2"))
    vocabulary = json.loads((tmp_path / "ct2" / "shared_vocabulary.json").read_text())
    assert vocabulary[:len(auto)] == spiece_tok.convert_ids_to_tokens(range(len(spiece_tok)))


def test_padded_vocabulary_rows_decode_to_nothing(spiece_tok, tmp_path):
    import transformers

    ref = transformers.T5Tokenizer.from_pretrained(spm.spiece_dir())
    ids = [5, 6, 400, 411, 7]
    assert spiece_tok.decode(ids) == ref.decode(ids) == spiece_tok.decode([5, 6, 7])
    assert spiece_tok.batch_decode(torch.tensor([[400, 401]]), skip_special_tokens=True) == [""]


def test_generate_cli_with_padded_vocabulary_rows(spiece_tok, tmp_path, capsys):
    """mT5 checkpoints have more rows than tokens; a generated padded id decodes to nothing (no crash)."""
    cfg = tiny("mt5", vocab_size=len(spiece_tok) + 12)
    params = mt5fn.init_params(cfg, seed=0)
    head = torch.zeros(cfg.vocab_size, cfg.d_model)
    head[-1, 0], head[-2, 0] = 100.0, -100.0  # only padded rows score: one of them wins every step
    params["lm_head"] = head
    params["decoder"]["final_norm"] = torch.zeros(cfg.d_model)
    params["decoder"]["final_norm"][0] = 1.0
    mt5fn.save_pretrained(params, cfg, tmp_path / "m", tokenizer=spiece_tok)
    enc = spiece_tok.batch_encode(["Hello world", "x"])
    out = mt5fn.generate(params, cfg, enc["input_ids"], enc["attention_mask"], max_new_tokens=3)
    assert (out[:, 1:] >= len(spiece_tok)).all()  # the padded rows are what gets generated
    assert main(["generate", "--model", str(tmp_path / "m"), "--max-new-tokens", "3", "Hello world", "x"]) == 0
    assert capsys.readouterr().out == "\n\n"


@pytest.mark.parametrize("value, fragment", [
    (10**6, "extra_ids=1000000 is too many sentinels"),
    (10**7, "extra_ids=10000000 is too many sentinels"),
    (-1, "extra_ids must be a non-negative int"),
    ("100", "extra_ids must be a non-negative int"),
])
def test_huge_or_bad_extra_ids_are_refused_up_front(tmp_path, value, fragment):
    shutil.copy(spm.spiece_model(), tmp_path / "spiece.model")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"extra_ids": value}))
    with pytest.raises(ValueError, match=fragment) as info:
        mt5fn.Tokenizer.from_pretrained(tmp_path)
    assert str(tmp_path / "tokenizer_config.json") in str(info.value)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 3000, "tokenizer_class": "ByT5Tokenizer"}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": 1000}))
    with pytest.raises(ValueError, match="extra_ids=3000 is too many sentinels: the model's vocabulary has 1000"):
        mt5fn.Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="too many sentinels"):
        mt5fn.Tokenizer(open(spm.spiece_model(), "rb").read(), extra_ids=10**9)


def test_a_folder_without_a_tokenizer_lists_what_was_looked_for(tmp_path):
    cfg = tiny("t5")
    mt5fn.save_pretrained(mt5fn.init_params(cfg), cfg, tmp_path / "m")
    with pytest.raises(FileNotFoundError) as info:
        mt5fn.Tokenizer.from_pretrained(tmp_path / "m")
    for name in ("tokenizer.json", "spiece.model", "tokenizer_config.json", "ByT5Tokenizer"):
        assert name in str(info.value)
    assert not mt5fn.tokenizer.has_tokenizer(tmp_path / "m")
    assert mt5fn.tokenizer.has_tokenizer(spm.spiece_dir()) and mt5fn.tokenizer.has_tokenizer(spm.spiece_model())


def test_binary_tokenizer_files_name_the_file(tmp_path):
    shutil.copy(spm.spiece_model(), tmp_path / "spiece.model")
    (tmp_path / "tokenizer_config.json").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match="tokenizer_config.json: not UTF-8 text"):
        mt5fn.Tokenizer.from_pretrained(tmp_path)
    os.remove(tmp_path / "tokenizer_config.json")
    (tmp_path / "tokenizer.json").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="tokenizer.json: not UTF-8 text"):
        mt5fn.Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "Unigram", "vocab": 3}}')
    with pytest.raises(ValueError, match="tokenizer.json: the Unigram model's 'vocab'"):
        mt5fn.Tokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("make", [lambda t: t, lambda t: mt5fn.Tokenizer.byt5()], ids=["spiece", "byt5"])
def test_undecodable_text_is_a_clear_error(spiece_tok, make):
    tok = make(spiece_tok)
    broken = b"caf\xe9 \xff".decode("utf-8", errors="surrogateescape")  # what a non-UTF-8 stdin reads as
    with pytest.raises(ValueError, match=r"texts\[1\] is not valid text: character 3 is U\+DCE9, a lone surrogate"):
        tok.batch_encode(["fine", broken])
    with pytest.raises(ValueError, match="text is not valid text"):
        tok.encode(broken)
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(b"bytes")
    assert tok.encode("\x00\x01 binary-ish but valid \ufffd")[-1] == tok.eos_token_id


def test_train_tokenizer_on_lines_longer_than_sentencepiece_reads(tmp_path):
    long_lines = ["word " * 5000] * 3  # 25 000 bytes each, over the 16 384 default
    with pytest.raises(ValueError, match="every line of the corpus is longer than max_sentence_length=16384"):
        mt5fn.train_tokenizer(long_lines, tmp_path / "a", vocab_size=50)
    assert not (tmp_path / "a").exists()
    with pytest.warns(UserWarning, match="3 of 26 lines are longer"):
        tok = mt5fn.train_tokenizer(long_lines + spm.CORPUS, tmp_path / "b", vocab_size=300, extra_ids=5)
    assert tok.decode(tok.encode("Hello world"), skip_special_tokens=True)
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"good line\n\xff\xfe bad\n")
    with pytest.raises(ValueError, match="corpus.txt: line 2 is not UTF-8"):
        mt5fn.train_tokenizer(corpus, tmp_path / "c", vocab_size=50)
