"""Generation speed: mt5fn in fp32 / bf16 / int8 against transformers and CTranslate2, side by side.

    python benchmarks/generate.py [--runs 5] [--threads N] [--cases greedy1,greedy8,beam4]
                                  [--engines mt5fn,mt5fn-held,...] [--previous PATH/TO/python]
    python benchmarks/generate.py --long          # one 4096-token input: generate 1 token vs encode

Random weights of the mt5-small shape (vocab 250112, d_model 512, 8 + 8
layers, 6 heads, d_ff 1024, untied head) on the CPU, the same thread count
for every engine. Each case encodes 32 source tokens per row and generates
exactly 32 new tokens (EOS is banned until then: ``min_new_tokens=32``):
greedy batch 1, greedy batch 8, beam search with 4 beams at batch 1.

Engines (all in this process; ``--previous`` adds one in another):

* ``mt5fn`` -- ``generate`` on the plain float32 pytree: every call prepares
  its decoding layout (the per-call overhead is ``mt5fn`` minus ``mt5fn-held``);
* ``mt5fn-held`` -- on a ``prepare_decoding`` tree made once for the case's rows;
* ``mt5fn-bf16`` / ``mt5fn-int8`` -- held trees of the bf16-cast weights and of
  ``mt5fn.quantize(params, cfg, "int8")``;
* ``mt5fn-compiled`` / ``mt5fn-bf16-compiled`` / ``mt5fn-int8-compiled`` --
  ``generate(..., compile=True)`` on the held fp32 / bf16 / int8 tree: the step
  through ``torch.compile``; its warm-up column is the compile time (once per
  case shape), its median the compiled decoding;
* ``transformers`` / ``transformers-bf16`` -- its ``generate`` on the same
  checkpoint in float32 and in bfloat16 (``torch_dtype``);
* ``ct2`` / ``ct2-int8`` -- CTranslate2 (optional: ``pip install ctranslate2``)
  converted from the same checkpoint, ``compute_type`` float32 and int8;
* ``llama.cpp-f32`` / ``-f16`` / ``-q8_0`` (``--engines llama.cpp`` for all three) --
  the checkpoint converted by llama.cpp's own ``convert_hf_to_gguf.py`` and decoded
  through its Python bindings (optional: ``benchmarks/llamacpp.py``; batch 1 only);
* ``mt5fn-held-worker`` -- ``mt5fn-held`` in a process of its own, driven
  like ``previous``: the like-for-like side of that comparison;
* ``previous`` -- ``--previous PYTHON``: the mt5fn installed for that
  interpreter (e.g. the last release in a second venv), plain params (held
  with ``--previous-held``), driven as a subprocess that times its own calls.

Timing is interleaved: each run calls every engine once in turn, after one
warm-up call each; the table shows medians. The floor is the weight-streaming
bound of a decoding step (decoder blocks without the cross K/V projections,
plus the head) at the best read bandwidth measured here, per dtype.
The machine may be shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

import torch

import mt5fn

SOURCE_LENGTH, NEW_TOKENS, LONG_LENGTH = 32, 32, 4096
CASES = {"greedy1": dict(batch=1, num_beams=1), "greedy8": dict(batch=8, num_beams=1),
         "beam4": dict(batch=1, num_beams=4)}
ENGINES = ("mt5fn", "mt5fn-held", "mt5fn-held-worker", "mt5fn-bf16", "mt5fn-int8", "mt5fn-compiled",
           "mt5fn-bf16-compiled", "mt5fn-int8-compiled", "transformers",
           "transformers-bf16", "ct2", "ct2-int8", "llama.cpp-f32", "llama.cpp-f16", "llama.cpp-q8_0")
# --engines llama.cpp names all three GGUF types
ALIASES = {"llama.cpp": ("llama.cpp-f32", "llama.cpp-f16", "llama.cpp-q8_0")}
BYTES = {"fp32": 4, "bf16": 2, "int8": 1}

# The driver of --previous and of mt5fn-held-worker: reads "batch beams" lines, answers the seconds one
# generate call took. "held" keeps one prepare_decoding tree per row count (made by the warm-up call).
_WORKER = r"""
import sys, time, torch, mt5fn
torch.set_num_threads(int(sys.argv[1]))
hold, trees = sys.argv[4] == "held", {}
cfg = mt5fn.MT5Config.preset("mt5-small").replace(tie_word_embeddings=False, dropout_rate=0.0)
params = mt5fn.init_params(cfg, seed=0)
sources = torch.randint(3, cfg.vocab_size, (8, int(sys.argv[2])), generator=torch.Generator().manual_seed(0))
print("ready", mt5fn.__file__, flush=True)
for line in sys.stdin:
    batch, beams = map(int, line.split())
    if hold and batch * beams not in trees:
        trees[batch * beams] = mt5fn.prepare_decoding(params, cfg, rows=batch * beams)
    tree = trees[batch * beams] if hold else params
    start = time.perf_counter()
    out = mt5fn.generate(tree, cfg, sources[:batch], max_new_tokens=int(sys.argv[3]),
                         min_new_tokens=int(sys.argv[3]), num_beams=beams)
    print(time.perf_counter() - start, " ".join(map(str, out[0, 1:].tolist())), flush=True)
"""


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def mt5_small_random() -> tuple[mt5fn.MT5Config, dict]:
    cfg = mt5fn.MT5Config.preset("mt5-small").replace(tie_word_embeddings=False, dropout_rate=0.0)
    return cfg, mt5fn.init_params(cfg, seed=0)


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bandwidth_gb_s() -> float:
    """Best read bandwidth of a 512 MiB buffer over a few streaming kernels (best of 5 each)."""
    buffer = torch.ones(128 * 1024 * 1024)  # 512 MiB, touched
    matrix, vector = buffer.view(-1, 512), torch.ones(128 * 1024 * 1024 // 512)
    best = 0.0
    for kernel in (lambda: buffer.sum(), lambda: vector[None, :] @ matrix, lambda: buffer.max()):
        kernel()
        best = max(best, buffer.numel() * 4 / min(_time(kernel) for _ in range(5)) / 1e9)
    return best


def step_elements(params: dict) -> int:
    """Weights one decoding step reads: decoder blocks (minus cross K/V, once per input), final norm, head."""
    total = params["lm_head"].numel() + params["decoder"]["final_norm"].numel()
    for block in params["decoder"]["blocks"]:
        for name, leaf in mt5fn.flatten_params(block).items():
            if name not in ("cross_attn.k", "cross_attn.v"):
                total += leaf.numel()
    return total


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


class Worker:
    """An mt5fn in another process, driven line by line; each call returns (seconds, first row's ids).

    ``--previous``: another interpreter's own mt5fn on plain params (the first round remembered its
    layout between calls). ``mt5fn-held-worker``: this mt5fn on a held tree in a process of its own,
    so that the comparison with the previous release runs both sides in the same conditions (this
    process also holds transformers' and CTranslate2's models and the other trees)."""

    def __init__(self, python: str, threads: int, *, held: bool = False, pythonpath: str | None = None) -> None:
        # Outside this checkout and without PYTHONPATH (unless given), so the interpreter imports its own mt5fn.
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        if pythonpath is not None:
            env["PYTHONPATH"] = pythonpath
        self._start([python, "-c", _WORKER, str(threads), str(SOURCE_LENGTH), str(NEW_TOKENS),
                     "held" if held else "plain"], env, tempfile.gettempdir(), python)

    def _start(self, command: list[str], env: dict, cwd: str, what: str) -> None:
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=cwd, env=env)
        ready = self.process.stdout.readline().split()
        if not ready or ready[0] != "ready":
            self.process.wait()
            raise RuntimeError(f"{what}: the benchmark worker did not start"
                               + (" (its engine is not installed)" if ready[:1] == ["missing"] else ""))
        self.where = ready[1]

    def __call__(self, batch: int, num_beams: int) -> tuple[float, list[int]]:
        self.process.stdin.write(f"{batch} {num_beams}\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().split()
        if answer and answer[0] == "n/a":  # the engine cannot run this case (llama.cpp beyond batch 1)
            raise ValueError(" ".join(answer[1:]))
        seconds, *ids = answer
        return float(seconds), [int(i) for i in ids]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


# Peers that run their own OpenMP teams. In this process they bind to torch's libgomp (it is loaded
# first, with global symbols), so their worker threads join its thread accounting: on a machine with
# as many cores as threads, libgomp then counts more threads than CPUs and stops spinning between
# parallel regions for everyone (each region pays a futex wake-up). --isolate runs them apart.
ISOLATED_PEERS = ("ct2", "ct2-int8", *ALIASES["llama.cpp"])


class PeerWorker(Worker):
    """One peer engine (``ISOLATED_PEERS``) in a process of its own: this script with ``--serve NAME``."""

    def __init__(self, name: str, threads: int) -> None:
        here = os.path.dirname(os.path.abspath(__file__))
        self._start([sys.executable, os.path.join(here, "generate.py"), "--serve", name, "--threads", str(threads)],
                    dict(os.environ), here, name)


def serve(name: str, threads: int) -> int:
    """The ``--serve`` side of ``PeerWorker``: build one engine on the same weights and inputs, then
    answer "batch beams" lines with "seconds ids..." (or "n/a why")."""
    torch.set_num_threads(threads)
    cfg, params = mt5_small_random()
    sources = torch.randint(3, cfg.vocab_size, (8, SOURCE_LENGTH), generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="mt5fn-bench-peer-") as tmp:
        args = argparse.Namespace(engines=name, threads=threads, previous=None, previous_held=False)
        with contextlib.redirect_stdout(sys.stderr):  # its build messages must not mix with the answers
            engine = build_engines(args, cfg, params, sources, tmp).get(name)
        if engine is None:  # its package is missing (build_engines said so on stderr)
            print("missing", name, flush=True)
            return 1
        print("ready", name, flush=True)
        for line in sys.stdin:
            batch, beams = map(int, line.split())
            try:
                seconds, ids = _call(engine, dict(batch=batch, num_beams=beams))
            except ValueError as error:
                print("n/a", str(error).replace("\n", " "), flush=True)
                continue
            print(seconds, " ".join(map(str, ids)), flush=True)
    return 0


def build_engines(args, cfg: mt5fn.MT5Config, params: dict, sources: torch.Tensor, tmp: str) -> dict:
    """{name: fn(batch, num_beams) -> first row's generated ids}; timed from outside unless it returns
    (seconds, ids) itself (the --previous worker)."""
    wanted = set(args.engines.split(","))
    engines: dict[str, Callable] = {}
    prepared: dict[tuple[str, int], dict] = {}
    trees = {"mt5fn-held": lambda: params,
             "mt5fn-bf16": lambda: mt5fn.tree_map(lambda t: t.to(torch.bfloat16), params),
             "mt5fn-int8": lambda: mt5fn.quantize(params, cfg, "int8")}
    made = {name: make() for name, make in trees.items() if name in wanted}

    def mt5fn_engine(name: str | None, compile: bool = False) -> Callable:
        def run(batch: int, num_beams: int) -> list[int]:
            tree = params
            if name is not None:
                key = (name, batch * num_beams)
                if key not in prepared:  # made once per case, outside the timed calls (the warm-up)
                    prepared[key] = mt5fn.prepare_decoding(made[name], cfg, rows=batch * num_beams)
                tree = prepared[key]
            out = mt5fn.generate(tree, cfg, sources[:batch], max_new_tokens=NEW_TOKENS,
                                 min_new_tokens=NEW_TOKENS, num_beams=num_beams, compile=compile)
            return out[0, 1:].tolist()
        return run

    if "mt5fn" in wanted:
        engines["mt5fn"] = mt5fn_engine(None)
    for name in made:
        engines[name] = mt5fn_engine(name)
    for name, tree in (("mt5fn-compiled", "mt5fn-held"), ("mt5fn-bf16-compiled", "mt5fn-bf16"),
                       ("mt5fn-int8-compiled", "mt5fn-int8")):
        if name in wanted:  # the held tree of the same precision, compiled
            made.setdefault(tree, trees[tree]())
            engines[name] = mt5fn_engine(tree, compile=True)

    if getattr(args, "isolate", False):
        for name in ISOLATED_PEERS:
            if name in wanted:
                try:
                    engines[name] = PeerWorker(name, args.threads)
                except RuntimeError as error:  # not installed, or its build failed: the worker said why
                    print(f"{name}: skipped ({error})")
        wanted -= set(ISOLATED_PEERS)

    checkpoint = os.path.join(tmp, "hf")
    hf_wanted = {"transformers", "transformers-bf16", "ct2", "ct2-int8", *ALIASES["llama.cpp"]} & wanted
    if hf_wanted:
        mt5fn.save_pretrained(params, cfg, checkpoint)
    for name, dtype in (("transformers", torch.float32), ("transformers-bf16", torch.bfloat16)):
        if name not in wanted:
            continue
        import transformers

        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(checkpoint, dtype=dtype).eval()
        print(f"{name}: transformers {transformers.__version__}, {dtype}, "
              f"{model.config._attn_implementation} attention")

        def run_hf(batch: int, num_beams: int, model=model) -> list[int]:
            with torch.inference_mode():
                out = model.generate(input_ids=sources[:batch], max_new_tokens=NEW_TOKENS,
                                     min_new_tokens=NEW_TOKENS, num_beams=num_beams, do_sample=False)
            return out[0, 1:].tolist()

        engines[name] = run_hf
    if {"ct2", "ct2-int8"} & wanted:
        try:
            ctranslate2 = convert_ctranslate2(checkpoint, os.path.join(tmp, "ct2"), cfg.vocab_size)
        except ImportError:
            print("ctranslate2 not installed: skipped (pip install ctranslate2)")
        else:
            vocabulary = _Vocabulary(cfg.vocab_size).tokens
            for name, compute in (("ct2", "float32"), ("ct2-int8", "int8")):
                if name not in wanted:
                    continue
                translator = ctranslate2.Translator(os.path.join(tmp, "ct2"), device="cpu", compute_type=compute,
                                                    intra_threads=args.threads, inter_threads=1)
                print(f"{name}: ctranslate2 {ctranslate2.__version__}, compute_type {compute}")

                def run_ct2(batch: int, num_beams: int, translator=translator) -> list[int]:
                    tokens = [[vocabulary[i] for i in row] for row in sources[:batch].tolist()]
                    result = translator.translate_batch(tokens, beam_size=num_beams, max_decoding_length=NEW_TOKENS,
                                                        min_decoding_length=NEW_TOKENS)
                    return [int(t[1:]) if t.startswith("t") else -1 for t in result[0].hypotheses[0]]

                engines[name] = run_ct2
    if set(ALIASES["llama.cpp"]) & wanted:
        try:  # run as a script (python benchmarks/generate.py) or as a module of the benchmarks package
            from benchmarks.llamacpp import build as build_llama_cpp
        except ImportError:
            from llamacpp import build as build_llama_cpp

        engines.update(build_llama_cpp(wanted, checkpoint, tmp, args.threads, NEW_TOKENS, SOURCE_LENGTH, sources))
    if "mt5fn-held-worker" in wanted:
        engines["mt5fn-held-worker"] = Worker(sys.executable, args.threads, held=True,
                                              pythonpath=os.path.dirname(os.path.dirname(mt5fn.__file__)))
    if args.previous:
        engines["previous"] = Worker(args.previous, args.threads, held=args.previous_held)
        print(f"previous: {args.previous} -> {engines['previous'].where}")
    order = args.engines.split(",") + ["previous"]
    return {name: engines[name] for name in order if name in engines}


def _call(fn: Callable, case: dict) -> tuple[float, list[int]]:
    if isinstance(fn, Worker):
        return fn(**case)
    start = time.perf_counter()
    ids = fn(**case)
    return time.perf_counter() - start, ids


def run_cases(engines: dict, cases: list[str], runs: int, settle: float = 0.0) -> dict[str, dict[str, dict]]:
    """{case: {engine: {"warm": s, "median": s, "runs": [...], "ids": first row}}}, interleaved.

    ``settle`` seconds pass before each timed call, so that no engine is timed while the
    previous one's idle workers still poll for work (libgomp spins before it sleeps,
    llama.cpp's thread pool polls). Measured 2026-12-05 on a 2-core Intel Xeon, 0.5 s
    changed no median beyond noise; it is there so that no run depends on it.
    """
    table: dict[str, dict[str, dict]] = {}
    for case in cases:
        spec, row = CASES[case], {}
        for name, fn in engines.items():  # warm-up: prepared trees, converted models, caches
            try:
                warm, ids = _call(fn, spec)
            except ValueError as error:  # an engine that cannot run this case (llama.cpp beyond batch 1)
                print(f"  {case:8s} {name:18s} n/a: {error}")
                continue
            row[name] = {"warm": warm, "runs": [], "ids": ids}
        for _ in range(runs):
            for name, fn in engines.items():
                if name in row:
                    time.sleep(settle)
                    row[name]["runs"].append(_call(fn, spec)[0])
        for name, result in row.items():
            result["median"] = statistics.median(result["runs"])
            print(f"  {case:8s} {name:18s} warm-up {result['warm']:6.2f} s  median {result['median']:6.3f} s  "
                  f"runs {', '.join(f'{t:.2f}' for t in result['runs'])}", flush=True)
        table[case] = row
    return table


def print_table(table: dict, engines: list[str], floors: dict[str, float]) -> None:
    base = "mt5fn-held" if "mt5fn-held" in engines else engines[0]
    print("\n| case | " + " | ".join(f"{n} (s)" for n in engines) + f" | per-call prepare (s) |")
    print("|---" * (len(engines) + 2) + "|")
    for case, row in table.items():
        cells = [f"{row[n]['median']:.3f}" if n in row else "n/a" for n in engines]
        overhead = (f"{row['mt5fn']['median'] - row['mt5fn-held']['median']:+.3f}"
                    if {"mt5fn", "mt5fn-held"} <= set(row) else "-")
        print(f"| {case} | " + " | ".join(cells) + f" | {overhead} |")
    print(f"\nratios to {base} (lower is faster for mt5fn):")
    pairs = [("mt5fn-held-worker", "previous"), ("mt5fn-held", "previous"), ("mt5fn-held", "ct2"), ("mt5fn-held", "transformers"),
             ("mt5fn-int8", "ct2-int8"), ("mt5fn-bf16", "transformers-bf16"), ("mt5fn-bf16", "mt5fn-held"),
             ("mt5fn-int8", "mt5fn-held"), ("mt5fn-compiled", "mt5fn-held"), ("mt5fn-bf16-compiled", "mt5fn-bf16"),
             ("mt5fn-int8-compiled", "mt5fn-int8"),
             ("mt5fn-held", "llama.cpp-f32"), ("mt5fn-bf16", "llama.cpp-f16"), ("mt5fn-int8", "llama.cpp-q8_0")]
    for case, row in table.items():
        parts = [f"{a}/{b} {row[a]['median'] / row[b]['median']:.2f}x" for a, b in pairs if a in row and b in row]
        print(f"  {case}: " + ", ".join(parts))
    print("floor per 32 tokens (one row's weights streamed per step): " +
          ", ".join(f"{k} {v * NEW_TOKENS:.2f} s" for k, v in floors.items()))


def long_case(cfg: mt5fn.MT5Config, params: dict, runs: int) -> None:
    """One 4096-token input: ``generate`` of one new token against ``encode`` alone (interleaved)."""
    ids = torch.randint(3, cfg.vocab_size, (1, LONG_LENGTH), generator=torch.Generator().manual_seed(1))
    held = mt5fn.prepare_decoding(params, cfg, rows=1)

    def encode():
        with torch.inference_mode():
            return mt5fn.encode(params, cfg, ids)

    def generate():
        return mt5fn.generate(held, cfg, ids, max_new_tokens=1)

    encode(), generate()
    times: dict[str, list[float]] = {"encode": [], "generate 1 token": []}
    for _ in range(runs):
        times["encode"].append(_time(encode))
        times["generate 1 token"].append(_time(generate))
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, value in medians.items():
        print(f"  long {name:18s} median {value:6.2f} s  runs {', '.join(f'{t:.2f}' for t in times[name])}")
    print(f"| {LONG_LENGTH}-token input | encode {medians['encode']:.2f} s | generate 1 token "
          f"{medians['generate 1 token']:.2f} s | ratio {medians['generate 1 token'] / medians['encode']:.2f}x |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma list of {', '.join(ENGINES)}")
    parser.add_argument("--previous", metavar="PYTHON", help="an interpreter with another mt5fn installed")
    parser.add_argument("--previous-held", action="store_true",
                        help="the previous release on a held prepare_decoding tree too (like mt5fn-held-worker)")
    parser.add_argument("--long", action="store_true", help="only the 4096-token input case")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--settle", type=float, default=0.5, metavar="SECONDS",
                        help="pause before each timed call, so no engine's idle threads still spin (0: none)")
    parser.add_argument("--isolate", action="store_true",
                        help="run CTranslate2 and llama.cpp each in a process of its own (see ISOLATED_PEERS)")
    parser.add_argument("--serve", metavar="ENGINE", help=argparse.SUPPRESS)  # PeerWorker's side
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.threads)
    args.engines = ",".join(name for given in args.engines.split(",") for name in ALIASES.get(given, (given,)))
    unknown = set(args.engines.split(",")) - set(ENGINES)
    bad_cases = set(args.cases.split(",")) - set(CASES)
    if unknown or bad_cases or args.runs < 1 or args.threads < 1 or args.settle < 0:
        parser.error(f"unknown engines {sorted(unknown)} / cases {sorted(bad_cases)}, or --runs/--threads < 1 or --settle < 0")
    torch.set_num_threads(args.threads)
    print(f"{cpu_name()}; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"{args.threads} threads, load average {os.getloadavg()}", flush=True)

    cfg, params = mt5_small_random()
    if args.long:
        long_case(cfg, params, args.runs)
        return 0
    sources = torch.randint(3, cfg.vocab_size, (8, SOURCE_LENGTH), generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="mt5fn-bench-") as tmp:
        engines = build_engines(args, cfg, params, sources, tmp)
        bandwidth = bandwidth_gb_s()
        floors = {kind: step_elements(params) * size / (bandwidth * 1e9) for kind, size in BYTES.items()}
        print(f"read bandwidth {bandwidth:.1f} GB/s; step floor ms/token: "
              + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in floors.items()))
        table = run_cases(engines, args.cases.split(","), args.runs, args.settle)
        reference = table[next(iter(table))].get("mt5fn", {}).get("ids")
        for name, result in table[next(iter(table))].items():
            if reference is not None:
                print(f"{name}: first row's ids equal mt5fn fp32's: {result['ids'] == reference}")
        for engine in engines.values():
            if isinstance(engine, Worker):  # PeerWorker included
                engine.close()
    print(f"load average {os.getloadavg()}")
    print_table(table, list(engines), floors)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"cpu": cpu_name(), "threads": args.threads, "table": table}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
