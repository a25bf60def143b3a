"""A small multilingual ``spiece.model`` trained at test time (nothing is downloaded).

Tests import this module and call :func:`spiece_model` (a path) or
:func:`spiece_dir` (a directory holding ``spiece.model``). The model is trained
once per process with SentencePiece's own trainer (unigram, T5 conventions:
``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, no BOS, ``nmt_nfkc`` normalisation)
on :data:`CORPUS`, so it knows Latin, Cyrillic, Greek, CJK, Arabic and
Devanagari text; characters outside the corpus (emoji, rare CJK) are unknown.
Training takes well under a second.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A researcher trains a small multilingual model on a laptop.",
    "Translate English to German: the house is wonderful.",
    "Das Haus ist wunderbar, und der Garten ist groß.",
    "Übersetzung ins Deutsche: Straße, Mädchen, schön, grün.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "Où est la bibliothèque ? À côté de l'école, près du café.",
    "El niño comió una manzana en la mañana; ¿dónde está el baño?",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "Привет, мир! Как дела? Сегодня хорошая погода.",
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
    "我们今天去学校学习中文和数学。",
    "北京是中国的首都，上海是一个大城市。",
    "今日はいい天気ですね。東京へ行きましょう。",
    "ひらがなとカタカナを勉強しています。",
    "안녕하세요, 만나서 반갑습니다. 한국어를 배워요.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "नमस्ते दुनिया, आप कैसे हैं? मैं ठीक हूँ।",
    "Türkçe öğreniyorum; çok güzel bir dil, değil mi?",
    "Numbers and symbols: 1234567890, 3.14, 42%, $5, #hash, @user, a+b=c.",
    "Mixed text: English, Deutsch, français, русский, 中文, 日本語.",
    "summarize: the model reads a long article and writes a short summary.",
    "question: what is the capital of France? context: Paris is the capital.",
]


def _train(out_dir: str, vocab_size: int) -> str:
    import sentencepiece as spm

    prefix = os.path.join(out_dir, "spiece")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_prefix=prefix, model_type="unigram",
        vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=1.0,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        normalization_rule_name="nmt_nfkc", num_threads=1, minloglevel=2,
    )
    os.remove(prefix + ".vocab")
    return prefix + ".model"


def spiece_model(vocab_size: int = 300) -> str:
    """Path of a freshly trained ``spiece.model`` (trained once per process and size)."""
    return _cached_model(int(vocab_size))


@functools.lru_cache(maxsize=None)
def _cached_model(vocab_size: int) -> str:
    out_dir = tempfile.mkdtemp(prefix="mt5fn-spm-")
    atexit.register(shutil.rmtree, out_dir, True)
    return _train(out_dir, vocab_size)


def spiece_dir(vocab_size: int = 300) -> str:
    """A directory holding only ``spiece.model`` (what ``Tokenizer.from_pretrained`` reads)."""
    return os.path.dirname(spiece_model(vocab_size))
