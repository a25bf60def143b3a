"""llama.cpp as an engine of ``benchmarks/generate.py``: the same checkpoint as GGUF F32, F16 and Q8_0.

The optional step (documented in docs/performance.md): ``pip install -e ".[bench]"`` builds
llama.cpp inside ``llama-cpp-python`` (its Python bindings), and this module fetches the
same version's source package once for ``convert_hf_to_gguf.py`` (the converter
llama.cpp users run), cached under ``~/.cache/mt5fn-bench``. Each engine

* converts the benchmark's checkpoint folder (random mt5-small weights, plus a small
  ``spiece.model``: the converter reads the vocabulary from it and pads it to
  ``vocab_size``) with ``--outtype f32 | f16 | q8_0``;
* loads it through the bindings' low-level API and decodes greedily in this process
  (``llama_encode`` once, then one ``llama_decode`` per token, arg-max with EOS banned
  until the 32nd token, as ``min_new_tokens`` does for the other engines), so it is
  timed interleaved with them.

Only batch 1 without beams: llama.cpp's encoder-decoder path decodes one sequence.
GGUF carries no ``relative_attention_max_distance`` (llama.cpp assumes 128, as mt5-small
has), no gelu-versus-silu and no output scaling: the fields this checkpoint needs
are those defaults, which the token-parity check at the start confirms.
"""

from __future__ import annotations

import ctypes
import glob
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "mt5fn-bench")
OUTTYPES = {"llama.cpp-f32": "f32", "llama.cpp-f16": "f16", "llama.cpp-q8_0": "q8_0"}
_CORPUS = ["The quick brown fox jumps over the lazy dog.", "Das Haus ist wunderbar.", "Le chien dort.",
           "Быстрая лиса.", "我们今天去学校。", "mixed text 1234567890 symbols $ % # @"]


def converter_dir() -> str:
    """``vendor/llama.cpp`` of the installed bindings' source package (downloaded once)."""
    import llama_cpp

    version = llama_cpp.__version__
    root = os.path.join(CACHE, f"llama_cpp_python-{version}")
    source = os.path.join(root, f"llama_cpp_python-{version}", "vendor", "llama.cpp")
    if not os.path.isfile(os.path.join(source, "convert_hf_to_gguf.py")):
        os.makedirs(root, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", root], check=True, capture_output=True)
        (archive,) = glob.glob(os.path.join(root, "llama_cpp_python-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    return source


def add_spiece_model(checkpoint: str) -> None:
    """A small SentencePiece model in the folder: what the converter reads the vocabulary from."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(_CORPUS * 8), model_prefix=os.path.join(tmp, "spiece"), model_type="unigram",
            vocab_size=80, hard_vocab_limit=False, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2,
            bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", num_threads=1, minloglevel=2)
        os.replace(os.path.join(tmp, "spiece.model"), os.path.join(checkpoint, "spiece.model"))


def convert(checkpoint: str, outtype: str, out_file: str) -> None:
    source = converter_dir()
    env = {**os.environ, "PYTHONPATH": os.path.join(source, "gguf-py")}
    done = subprocess.run([sys.executable, os.path.join(source, "convert_hf_to_gguf.py"), checkpoint,
                           "--outtype", outtype, "--outfile", out_file], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py --outtype {outtype} failed: {done.stderr.strip()[-800:]}")


def _ignore_log(level, text, user_data) -> None:
    return None


_QUIET = None  # the no-op log callback, made once (ctypes must keep it alive)


class LlamaCppEngine:
    """Greedy batch-1 decoding of one GGUF file through libllama; ``engine(batch, num_beams)`` -> ids."""

    def __init__(self, path: str, threads: int, new_tokens: int, max_source: int, *,
                 extra_buffers: bool = True) -> None:
        import llama_cpp

        global _QUIET
        if _QUIET is None:
            _QUIET = llama_cpp.llama_log_callback(_ignore_log)
        self.lib, self.new_tokens = llama_cpp, new_tokens
        llama_cpp.llama_log_set(_QUIET, ctypes.c_void_p())  # its load log is hundreds of lines
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.use_extra_bufts = extra_buffers
        self.model = llama_cpp.llama_model_load_from_file(path.encode(), model_params)
        if not self.model:
            raise RuntimeError(f"{path}: llama.cpp could not load it")
        context_params = llama_cpp.llama_context_default_params()
        context_params.n_ctx = max_source + new_tokens + 8
        context_params.n_batch = context_params.n_ubatch = max(max_source, 1)
        context_params.n_threads = context_params.n_threads_batch = threads
        self.context = llama_cpp.llama_init_from_model(self.model, context_params)
        vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.vocab_size = llama_cpp.llama_vocab_n_tokens(vocab)
        self.eos = llama_cpp.llama_vocab_eos(vocab)
        self.start = llama_cpp.llama_model_decoder_start_token(self.model)

    def _batch(self, ids: list[int]):
        array = (self.lib.llama_token * len(ids))(*ids)
        return self.lib.llama_batch_get_one(array, len(ids)), array  # keep the array alive with the batch

    def __call__(self, sources, batch: int, num_beams: int) -> list[int]:
        if batch != 1 or num_beams != 1:
            raise ValueError("llama.cpp's encoder-decoder path decodes one sequence (batch 1, no beams)")
        lib = self.lib
        lib.llama_memory_clear(lib.llama_get_memory(self.context), True)
        encoded, keep = self._batch([int(t) for t in sources[0].tolist()])
        if lib.llama_encode(self.context, encoded) != 0:
            raise RuntimeError("llama_encode failed")
        token, out = self.start, []
        for _ in range(self.new_tokens):
            decoded, keep = self._batch([token])
            if lib.llama_decode(self.context, decoded) != 0:
                raise RuntimeError("llama_decode failed")
            pointer = lib.llama_get_logits_ith(self.context, -1)
            logits = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                                           shape=(self.vocab_size,))
            logits = logits.copy()
            logits[self.eos] = -np.inf  # min_new_tokens == new_tokens: EOS is banned throughout
            token = int(logits.argmax())
            out.append(token)
        return out


def build(wanted: set[str], checkpoint: str, tmp: str, threads: int, new_tokens: int, max_source: int,
          sources) -> dict:
    """{engine name: fn(batch, num_beams) -> first row's ids} for the llama.cpp engines in ``wanted``."""
    try:
        import llama_cpp
    except ImportError:
        print("llama.cpp: llama-cpp-python not installed: skipped (pip install -e '.[bench]')")
        return {}
    if not os.path.isfile(os.path.join(checkpoint, "spiece.model")):
        add_spiece_model(checkpoint)
    engines = {}
    for name, outtype in OUTTYPES.items():
        if name not in wanted:
            continue
        path = os.path.join(tmp, f"model-{outtype}.gguf")
        convert(checkpoint, outtype, path)
        # Q8_0 through llama.cpp's AMX repacked buffers crashes (SIGSEGV) on T5 with llama-cpp-python 0.3.36
        # on an AMX Xeon; its plain CPU buffers (AVX512-VNNI kernels) run.
        engine = LlamaCppEngine(path, threads, new_tokens, max_source, extra_buffers=outtype != "q8_0")
        print(f"{name}: llama.cpp via llama-cpp-python {llama_cpp.__version__}, {outtype}, "
              f"{os.path.getsize(path) / 2**20:.0f} MiB")
        engines[name] = lambda batch, num_beams, engine=engine: engine(sources, batch, num_beams)
    return engines
