"""mt5fn.Tokenizer against transformers' T5Tokenizer on the same spiece.model.

Ids, padding and decoded text must be identical: multilingual text, whitespace
runs and every Unicode whitespace character, sentinels and other special
tokens written inside the text, characters the model does not know, empty
strings, and decoding of id sequences that mix pieces and special tokens.
"""

from __future__ import annotations

import os
import random
import unicodedata

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mt5fn
import spm

WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
              "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")

STRINGS = [
    *spm.CORPUS,
    "", " ", "   ", "\t\n", "  leading", "trailing   ", "many     spaces\t\ttabs\n\nnewlines",
    "x <extra_id_0> y<extra_id_1>z", "<extra_id_99><extra_id_9>", "<extra_id_100> is not a sentinel",
    "<extra_id_0", "<<extra_id_0>>", "a</s>b<pad>c<unk>d", "</s>", " <extra_id_0> ",
    "emoji 😀😀 ok 龘 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "unknown ∰∱ symbols ☃", "ＡＢＣ１２３ fullwidth", "ﬁ ligature ĳ ǅ Ⅻ ①②",
    "e\u0301 combining", "zero\u200bwidth\u200djoiner\u200cnon", "\ufeffbom", "soft\u00adhyphen",
    "control\x00chars\x1f\x1c here", "crlf\r\nline", "Grüße aus Köln — «quotes» „dt“ ‚x‘",
    "中文 English 混合 text，標點！", "   日本語   の   空白   ", "meta\u2581space \u2581\u2581x\u2581",
    *(f"a{ch}b{ch}{ch}c" for ch in WHITESPACE),
]


@pytest.fixture(scope="module")
def pair():
    import transformers

    ref = transformers.T5Tokenizer.from_pretrained(spm.spiece_dir())
    return mt5fn.Tokenizer.from_pretrained(spm.spiece_dir()), ref


@pytest.mark.parametrize("text", STRINGS, ids=[repr(s)[:30] for s in STRINGS])
def test_encode_and_decode_match_transformers(pair, text):
    tok, ref = pair
    ids = tok.encode(text)
    assert ids == ref(text)["input_ids"]
    assert ids[-1] == tok.eos_token_id
    for skip in (False, True):
        assert tok.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)


def test_vocabulary_layout_matches_transformers(pair):
    tok, ref = pair
    assert tok.vocab_size == len(tok) == len(ref) == 300 + 100
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (
        ref.pad_token_id, ref.eos_token_id, ref.unk_token_id)
    for n in (0, 1, 57, 99):
        assert tok.sentinel_id(n) == tok.vocab_size - 1 - n == ref.convert_tokens_to_ids(f"<extra_id_{n}>")
    ids = list(range(tok.vocab_size))
    assert tok.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)


def test_decode_random_ids_with_specials_matches_transformers(pair):
    tok, ref = pair
    rng = random.Random(0)
    specials = [0, 1, 2, *range(300, 400)]
    for _ in range(300):
        ids = [rng.choice(specials) if rng.random() < 0.3 else rng.randrange(3, 300)
               for _ in range(rng.randrange(0, 12))]
        for skip in (False, True):
            assert tok.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip), ids
    batch = torch.tensor([[5, 300, 7, 1, 0], [399, 3, 3, 2, 1]])
    assert tok.batch_decode(batch) == ref.batch_decode(batch)
    assert tok.batch_decode(batch, skip_special_tokens=True) == ref.batch_decode(batch, skip_special_tokens=True)


_ALPHABET = sorted(set("".join(spm.CORPUS)) | set(WHITESPACE) | set("😀∰☃\u0301\u200b"))
_texts = st.lists(st.one_of(st.text(alphabet=_ALPHABET, max_size=12),
                            st.sampled_from(["<extra_id_0>", "<extra_id_42>", "</s>", "<pad>", "<unk>"])),
                  max_size=6).map("".join)


def _hits_grapheme_quirk(text: str) -> bool:
    """A combining mark right after a character the normaliser rewrites (whitespace, NFKC): where
    transformers' ``tokenizers`` pipeline and SentencePiece itself disagree."""
    return any(unicodedata.category(ch).startswith("M") and i > 0
               and (text[i - 1].isspace() or unicodedata.normalize("NFKC", text[i - 1]) != text[i - 1])
               for i, ch in enumerate(text))


@given(text=_texts)
def test_encode_matches_transformers_on_generated_text(pair, text):
    """Any mix of corpus characters, whitespace, unknown characters and special tokens."""
    tok, ref = pair
    ids = tok.encode(text)
    assert ids == ref(text)["input_ids"]
    assert tok.decode(ids) == ref.decode(ids)


def test_ids_follow_transformers_where_sentencepiece_differs(pair):
    """transformers' normaliser drops a combining mark after a rewritten character; SentencePiece keeps
    it. mt5fn runs transformers' pipeline (through ``tokenizers``), so its ids are transformers'."""
    import sentencepiece

    tok, ref = pair
    sp = sentencepiece.SentencePieceProcessor(model_file=spm.spiece_model())
    text = "a\u3000\u0301"
    assert _hits_grapheme_quirk(text)
    assert tok.encode(text) == ref(text)["input_ids"] == sp.encode("a") + [1]
    assert sp.encode(text) != sp.encode("a")


@pytest.mark.parametrize("kwargs", [
    dict(padding=True), dict(padding="longest"), dict(padding="max_length", max_length=40),
    dict(padding=True, truncation=True, max_length=5), dict(padding="max_length", truncation=True, max_length=1),
    dict(padding=False, truncation=True, max_length=4, return_tensors=None),
    dict(padding=False, return_tensors=None),
])
def test_batch_encode_matches_transformers(pair, kwargs):
    tok, ref = pair
    texts = ["Hello world", "", "Привет, мир! <extra_id_3> 中文", "  x  ", spm.CORPUS[2]]
    ours = tok.batch_encode(texts, **kwargs)
    theirs = ref(texts, **{"return_tensors": "pt", **kwargs})
    assert set(ours) == {"input_ids", "attention_mask"}
    for key in ours:
        if kwargs.get("return_tensors", "pt") == "pt":
            assert ours[key].dtype == torch.long
            assert torch.equal(ours[key], theirs[key]), key
        else:
            assert ours[key] == theirs[key], key


def test_batch_encode_of_nothing(pair):
    tok, _ = pair
    out = tok.batch_encode([])
    assert out["input_ids"].shape == (0, 0) and out["attention_mask"].dtype == torch.long
    assert tok.batch_encode([], padding="max_length", max_length=3)["input_ids"].shape == (0, 3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(padding="max_length"), "max_length is required"),
    (dict(truncation=True), "max_length is required"),
    (dict(padding=True, max_length=4), "would be ignored"),
    (dict(padding="max_length", max_length=2), "truncation=True"),
    (dict(padding="sideways"), "padding must be"),
    (dict(max_length=0, truncation=True), "max_length must be"),
    (dict(padding=False), "different lengths"),
    (dict(return_tensors="np"), "return_tensors"),
])
def test_batch_encode_rejects_bad_arguments(pair, kwargs, match):
    tok, _ = pair
    with pytest.raises(ValueError, match=match):
        tok.batch_encode(["a long text here", "b"], **kwargs)


def test_bad_inputs_are_clear_errors(pair, tmp_path):
    tok, _ = pair
    with pytest.raises(TypeError, match="list of str"):
        tok.batch_encode("just one string")
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(b"bytes")
    with pytest.raises(ValueError, match="ids: 400 is not a token id"):
        tok.convert_ids_to_tokens([5, 400])
    with pytest.raises(ValueError, match="ids: -1"):
        tok.decode(torch.tensor([-1]))
    with pytest.raises(ValueError, match="n must be"):
        tok.sentinel_id(100)
    with pytest.raises(FileNotFoundError, match="looked for tokenizer.json, spiece.model, and a tokenizer_config"):
        mt5fn.Tokenizer.from_pretrained(tmp_path)
    bad = tmp_path / "spiece.model"
    bad.write_bytes(b"\x00not a sentencepiece model")
    with pytest.raises(ValueError, match="not a valid SentencePiece model"):
        mt5fn.Tokenizer.from_pretrained(tmp_path)


def test_save_pretrained_is_read_by_transformers_autotokenizer(pair, tmp_path):
    import transformers

    tok, _ = pair
    tok.save_pretrained(tmp_path / "tok")
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    again = mt5fn.Tokenizer.from_pretrained(tmp_path / "tok")
    assert len(auto) == again.vocab_size == tok.vocab_size
    for text in STRINGS[:30]:
        assert auto(text)["input_ids"] == again.encode(text) == tok.encode(text)
    with open(spm.spiece_model(), "rb") as a, open(tmp_path / "tok" / "spiece.model", "rb") as b:
        assert a.read() == b.read()


def test_train_tokenizer_from_texts_and_files_matches_transformers(tmp_path):
    import transformers

    tok = mt5fn.train_tokenizer(spm.CORPUS, tmp_path / "a", vocab_size=300, extra_ids=10)
    assert sorted(os.listdir(tmp_path / "a")) == ["special_tokens_map.json", "spiece.model", "tokenizer.json",
                                                  "tokenizer_config.json"]
    assert tok.extra_ids == 10 and tok.vocab_size <= 300 + 10
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path / "a")
    assert len(ref) == tok.vocab_size
    for text in STRINGS:
        ids = tok.encode(text)
        assert ids == ref(text)["input_ids"], text
        assert tok.decode(ids) == ref.decode(ids)
    assert tok.encode("<extra_id_9>") == [tok.vocab_size - 10, 1]

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(spm.CORPUS) + "\n", encoding="utf-8")
    from_file = mt5fn.train_tokenizer(corpus, tmp_path / "b", vocab_size=300, extra_ids=10)
    from_list = mt5fn.train_tokenizer([str(corpus)], tmp_path / "c", vocab_size=300, extra_ids=10)
    assert from_file.encode(spm.CORPUS[5]) == from_list.encode(spm.CORPUS[5]) == tok.encode(spm.CORPUS[5])


def test_train_tokenizer_on_a_tiny_corpus_and_bad_input(tmp_path):
    tiny = mt5fn.train_tokenizer(["hello world", "hello there"], tmp_path / "tiny", vocab_size=5000)
    assert tiny.vocab_size < 5000 + 100  # the vocabulary size is a soft limit
    assert tiny.decode(tiny.encode("hello world"), skip_special_tokens=True) == "hello world"
    with pytest.warns(UserWarning, match="cannot hold the corpus's characters"):
        grown = mt5fn.train_tokenizer(spm.CORPUS, tmp_path / "grown", vocab_size=50, extra_ids=0)
    assert grown.vocab_size > 50
    assert grown.decode(grown.encode("中文 Привет"), skip_special_tokens=True) == "中文 Привет"
    assert grown.unk_token_id not in grown.encode("".join(spm.CORPUS))
    with pytest.raises(ValueError, match="empty"):
        mt5fn.train_tokenizer(["", "  "], tmp_path / "empty")
    with pytest.raises(ValueError, match="vocab_size"):
        mt5fn.train_tokenizer(["x"], tmp_path / "bad", vocab_size=0)
    with pytest.raises(FileNotFoundError, match="no such file"):
        mt5fn.train_tokenizer(tmp_path / "absent.txt", tmp_path / "bad")
    assert not (tmp_path / "empty").exists() and not (tmp_path / "bad").exists()


def test_model_that_keeps_whitespace_runs_matches_transformers(tmp_path):
    """A model trained with remove_extra_whitespaces=False: transformers still splits on whitespace."""
    import sentencepiece
    import transformers

    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(spm.CORPUS * 4), model_prefix=str(tmp_path / "spiece"), vocab_size=300,
        hard_vocab_limit=False, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        remove_extra_whitespaces=False, num_threads=1, minloglevel=2)
    tok, ref = mt5fn.Tokenizer.from_pretrained(tmp_path), transformers.T5Tokenizer.from_pretrained(tmp_path)
    for text in STRINGS:
        assert tok.encode(text) == ref(text)["input_ids"], text
