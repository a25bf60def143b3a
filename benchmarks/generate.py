"""Generation speed: mt5fn against transformers and CTranslate2 on the mt5-small shape.

    python benchmarks/generate.py [--runs 5] [--threads N] [--cases greedy1,greedy8,beam4]

Random weights of the mt5-small shape (vocab 250112, d_model 512, 8 + 8
layers, 6 heads, d_ff 1024, untied head), float32 on the CPU, the same thread
count for every engine. Each case encodes 32 source tokens per row and
generates exactly 32 new tokens (EOS is banned until then:
``min_new_tokens=32``), and reports the median wall time of ``--runs`` runs
after one warm-up run (the warm-up is where mt5fn prepares its fused weight
copies and CTranslate2 loads its model; it is printed separately):

* greedy, batch 1;  greedy, batch 8;  beam search with 4 beams, batch 1.

The floor is the weight-streaming bound of a decoding step: the bytes a step
must read (decoder blocks without the cross-attention K/V projections, which
run once per input, plus the LM head) divided by the best memory read
bandwidth measured here, times 32 steps.

CTranslate2 is optional (``pip install ctranslate2``); it is converted from the
same saved checkpoint with its ``TransformersConverter`` (a stand-in
vocabulary of token strings replaces the tokenizer a random model lacks).
The machine may be shared: the script prints the load average before and
after, and the medians are only as quiet as the machine was.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

import mt5fn

SOURCE_LENGTH, NEW_TOKENS = 32, 32
CASES = {"greedy1": dict(batch=1, num_beams=1), "greedy8": dict(batch=8, num_beams=1),
         "beam4": dict(batch=1, num_beams=4)}


def mt5_small_random() -> tuple[mt5fn.MT5Config, dict]:
    cfg = mt5fn.MT5Config.preset("mt5-small").replace(tie_word_embeddings=False, dropout_rate=0.0)
    return cfg, mt5fn.init_params(cfg, seed=0)


def bandwidth_gb_s(threads: int) -> dict[str, float]:
    """Read bandwidth of a 512 MiB buffer by a few streaming kernels (best of 5 each)."""
    buffer = torch.ones(128 * 1024 * 1024)  # 512 MiB, touched
    matrix = buffer.view(-1, 512)
    vector = torch.ones(matrix.shape[0])
    kernels = {"sum": lambda: buffer.sum(), "gemv x@W": lambda: vector[None, :] @ matrix,
               "max": lambda: buffer.max()}
    out = {}
    for name, kernel in kernels.items():
        kernel()
        best = min(_time(kernel) for _ in range(5))
        out[name] = buffer.numel() * 4 / best / 1e9
    return out


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_bytes(params: dict) -> int:
    """Bytes one decoding step reads: decoder blocks (minus cross K/V), final norm, head."""
    total = params["lm_head"].numel() + params["decoder"]["final_norm"].numel()
    for block in params["decoder"]["blocks"]:
        for name, leaf in mt5fn.flatten_params(block).items():
            if name not in ("cross_attn.k", "cross_attn.v"):
                total += leaf.numel()
    return total * 4


class _Vocabulary:
    """The tokenizer interface CTranslate2's converter reads, over stand-in token strings."""

    def __init__(self, size: int) -> None:
        self.tokens = ["<pad>", "</s>", "<unk>"] + [f"t{i}" for i in range(3, size)]
        self.pad_token, self.eos_token, self.unk_token = "<pad>", "</s>", "<unk>"

    def get_vocab(self) -> dict[str, int]:
        return {token: index for index, token in enumerate(self.tokens)}

    def convert_ids_to_tokens(self, index: int) -> str:
        return self.tokens[index]


def convert_ctranslate2(checkpoint: str, out_dir: str, vocab_size: int):
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    class Converter(TransformersConverter):
        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return _Vocabulary(vocab_size)

    Converter(checkpoint).convert(out_dir, quantization="float32", force=True)
    return ctranslate2


def run_case(name: str, engines: dict, runs: int, inputs: dict) -> dict[str, tuple[float, float]]:
    """{engine: (warm-up seconds, median seconds)} for one case."""
    results = {}
    for engine, fn in engines.items():
        warm = _time(lambda: fn(**inputs))
        times = [_time(lambda: fn(**inputs)) for _ in range(runs)]
        results[engine] = (warm, statistics.median(times))
        print(f"  {name:8s} {engine:12s} warm-up {warm:7.2f} s   median {results[engine][1]:7.2f} s   "
              f"runs {', '.join(f'{t:.2f}' for t in times)}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--no-ctranslate2", action="store_true")
    parser.add_argument("--no-transformers", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()}", flush=True)

    cfg, params = mt5_small_random()
    generator = torch.Generator().manual_seed(0)
    sources = torch.randint(3, cfg.vocab_size, (8, SOURCE_LENGTH), generator=generator)

    def run_mt5fn(batch: int, num_beams: int):
        return mt5fn.generate(params, cfg, sources[:batch], max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                              num_beams=num_beams)

    engines = {"mt5fn": run_mt5fn}
    tmp = tempfile.TemporaryDirectory(prefix="mt5fn-bench-")
    checkpoint = os.path.join(tmp.name, "hf")
    if not (args.no_transformers and args.no_ctranslate2):
        mt5fn.save_pretrained(params, cfg, checkpoint)
    if not args.no_transformers:
        import transformers

        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(checkpoint).eval()
        print(f"transformers {transformers.__version__} ({model.config._attn_implementation} attention)")

        def run_transformers(batch: int, num_beams: int):
            with torch.inference_mode():
                return model.generate(input_ids=sources[:batch], max_new_tokens=NEW_TOKENS,
                                      min_new_tokens=NEW_TOKENS, num_beams=num_beams, do_sample=False)

        engines["transformers"] = run_transformers
    if not args.no_ctranslate2:
        try:
            ctranslate2 = convert_ctranslate2(checkpoint, os.path.join(tmp.name, "ct2"), cfg.vocab_size)
        except ImportError:
            print("ctranslate2 not installed: skipped (pip install ctranslate2)")
        else:
            translator = ctranslate2.Translator(os.path.join(tmp.name, "ct2"), device="cpu",
                                                compute_type="float32", intra_threads=args.threads,
                                                inter_threads=1)
            print(f"ctranslate2 {ctranslate2.__version__} (float32)")
            vocabulary = _Vocabulary(cfg.vocab_size).tokens

            def run_ctranslate2(batch: int, num_beams: int):
                tokens = [[vocabulary[i] for i in row] for row in sources[:batch].tolist()]
                return translator.translate_batch(tokens, beam_size=num_beams, max_decoding_length=NEW_TOKENS,
                                                  min_decoding_length=NEW_TOKENS)

            engines["ctranslate2"] = run_ctranslate2

    # Same tokens from every engine (greedy, batch 1) before timing anything.
    reference = run_mt5fn(1, 1)[0, 1:].tolist()
    if "transformers" in engines:
        same = engines["transformers"](1, 1)[0, 1:].tolist() == reference
        print(f"transformers greedy ids equal mt5fn's: {same}")
    if "ctranslate2" in engines:
        hypothesis = engines["ctranslate2"](1, 1)[0].hypotheses[0]
        same = [int(token[1:]) if token.startswith("t") else -1 for token in hypothesis] == reference
        print(f"ctranslate2 greedy ids equal mt5fn's: {same} ({len(hypothesis)} tokens)")

    bandwidth = bandwidth_gb_s(args.threads)
    best_bandwidth = max(bandwidth.values())
    per_step = step_bytes(params)
    floor_token = per_step / (best_bandwidth * 1e9)
    print("read bandwidth GB/s: " + ", ".join(f"{k} {v:.1f}" for k, v in bandwidth.items()))
    print(f"step reads {per_step / 2**20:.0f} MiB -> floor {floor_token * 1e3:.1f} ms/token, "
          f"{floor_token * NEW_TOKENS:.2f} s per {NEW_TOKENS} tokens (one row; more rows read the same weights)")

    table = {}
    for name in args.cases.split(","):
        table[name] = run_case(name, engines, args.runs, CASES[name])

    print(f"\nload average {os.getloadavg()}")
    names = list(engines)
    print("| case | " + " | ".join(f"{n} (s)" for n in names) + " | transformers / mt5fn | ctranslate2 / mt5fn "
          "| mt5fn ms/token | floor ms/token | mt5fn / floor |")
    print("|---" * (len(names) + 6) + "|")
    for name, results in table.items():
        ours = results["mt5fn"][1]
        cells = [f"{results[n][1]:.2f}" for n in names]
        ratio = lambda n: f"{results[n][1] / ours:.2f}x" if n in results else "-"  # noqa: E731
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio('transformers')} | {ratio('ctranslate2')} | "
              f"{ours / NEW_TOKENS * 1e3:.1f} | {floor_token * 1e3:.1f} | {ours / NEW_TOKENS / floor_token:.2f}x |")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
