"""T5 text encoders as image and video models use them: mt5fn against transformers' T5EncoderModel.

    python benchmarks/encoder.py [--shape xl|large|base] [--runs 3] [--threads N] [--dir DIR]
    python benchmarks/encoder.py precision      # fp16 / bf16 error against fp32, large activations

``speed`` (the default): a random encoder of the T5 v1.1 shape (xl: d_model
2048, d_ff 5120, 24 layers, 32 heads, d_kv 64, vocab 32128 -- the shape of
PixArt's and Flux's text encoders below XXL) is saved once, in float32, as a
``T5EncoderModel`` folder. Memory: each side loads it alone in a fresh
subprocess per dtype (float32, bfloat16) -- transformers:
``T5EncoderModel.from_pretrained(dir, dtype=...)``, mt5fn:
``load_pretrained(dir, dtype=...)`` -- encodes 4 x 256 tokens (one row
padded) once, and reports the load time and the process's peak resident
memory (``VmHWM``), with the resident memory before loading. Speed: one
subprocess per dtype loads both, warms both up, and times ``--runs``
encodes of each in alternation (the order flips each round), so that a busy
moment on a shared machine slows both alike; the median is reported. Same
thread count for both sides. The load average is printed.

``precision``: a T5 v1.1-shaped encoder (8 layers, d_model 512) whose FFN
outputs in three blocks are scaled up until the float32 residual stream
peaks above 3e5 -- float16's range ends at 65504, and real T5 v1.1 / flan-T5
checkpoints go past it -- encoded in float16 and bfloat16 by both, each
against the float32 output: relative error (Frobenius), largest error over
the largest activation, and whether the output is finite. Also the all-float16
variant (``wo`` cast too), where only transformers' clamp keeps values finite,
and the loss of a float8 save (``save_pretrained(..., dtype=float8_e4m3fn)``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SHAPES = {
    "xl": dict(d_model=2048, d_ff=5120, num_layers=24, num_heads=32, d_kv=64),
    "large": dict(d_model=1024, d_ff=2816, num_layers=24, num_heads=16, d_kv=64),
    "base": dict(d_model=768, d_ff=2048, num_layers=12, num_heads=12, d_kv=64),
}

_SETUP = """
import json, os, statistics, sys, time
import torch
folder, dtype_name, runs, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
dtype = getattr(torch, dtype_name)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

g = torch.Generator().manual_seed(0)
ids = torch.randint(3, 32000, (4, 256), generator=g)
mask = torch.ones_like(ids)
mask[3, 200:] = 0

def load(side):
    start = time.perf_counter()
    if side == "mt5fn":
        import mt5fn
        cfg, params = mt5fn.load_pretrained(folder, dtype=dtype)
        run = lambda: mt5fn.encode(params, cfg, ids, mask)
    else:
        import transformers
        model = transformers.T5EncoderModel.from_pretrained(folder, dtype=dtype).eval()
        run = lambda: model(input_ids=ids, attention_mask=mask).last_hidden_state
    return run, time.perf_counter() - start
"""

# One side alone in a fresh process: load time, one encode, peak resident memory.
MEMORY_CHILD = _SETUP + """
side = sys.argv[5]
if side == "mt5fn":
    import mt5fn
else:
    import transformers
before = status("VmRSS:")
run, loaded = load(side)
with torch.inference_mode():
    start = time.perf_counter()
    out = run()
    first = time.perf_counter() - start
print(json.dumps({"load_s": loaded, "first_encode_s": first, "rss_before": before, "peak_rss": status("VmHWM:"),
                  "finite": bool(torch.isfinite(out).all())}))
"""

# Both sides in one process, timed in alternation (the order flips each round): a busy moment on a
# shared machine slows both alike.
SPEED_CHILD = _SETUP + """
runs_of = {side: load(side)[0] for side in ("transformers", "mt5fn")}
times = {side: [] for side in runs_of}
with torch.inference_mode():
    for run in runs_of.values():
        run()  # warm-up
    for index in range(runs):
        order = list(runs_of) if index % 2 == 0 else list(runs_of)[::-1]
        for side in order:
            start = time.perf_counter()
            runs_of[side]()
            times[side].append(time.perf_counter() - start)
print(json.dumps(times))
"""


def _gib(n: int) -> str:
    return f"{n / 2 ** 30:.2f} GiB"


def build(folder: str, shape: str) -> int:
    """Save the random encoder once (float32 T5EncoderModel folder); returns its parameter count."""
    import mt5fn

    cfg = mt5fn.MT5Config(model_type="t5", vocab_size=32128, feed_forward_proj="gated-gelu", tie_word_embeddings=True,
                          num_decoder_layers=1, dropout_rate=0.0, **SHAPES[shape])
    params = mt5fn.init_params(cfg, seed=0)
    encoder = {"shared": params.pop("shared"), "encoder": params.pop("encoder")}
    del params
    mt5fn.save_pretrained(encoder, cfg, folder)
    return mt5fn.num_params(encoder)


def speed(args: argparse.Namespace) -> None:
    threads = args.threads or min(os.cpu_count() or 1, 16)
    root = args.dir or tempfile.mkdtemp(prefix="mt5fn-encoder-bench-")
    folder = os.path.join(root, f"t5-v1_1-{args.shape}-encoder")
    os.makedirs(root, exist_ok=True)
    total, used, free = shutil.disk_usage(os.path.dirname(folder))
    print(f"# folder {folder} (disk free {_gib(free)}); load average {os.getloadavg()}")
    if not os.path.isdir(folder):
        start = time.perf_counter()
        count = build(folder, args.shape)
        print(f"# built and saved {count:,} parameters in {time.perf_counter() - start:.1f} s")
    rows: dict[tuple[str, str], dict] = {}
    for dtype in ("float32", "bfloat16"):
        for side in ("transformers", "mt5fn"):
            out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, folder, dtype, "0", str(threads), side],
                                 capture_output=True, text=True, check=True)
            rows[(dtype, side)] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"# memory {dtype:9s} {side:12s} {json.dumps(rows[(dtype, side)])} "
                  f"load avg {os.getloadavg()[0]:.1f}", flush=True)
        out = subprocess.run([sys.executable, "-c", SPEED_CHILD, folder, dtype, str(args.runs), str(threads)],
                             capture_output=True, text=True, check=True)
        times = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"# speed  {dtype:9s} {json.dumps(times)} load avg {os.getloadavg()[0]:.1f}", flush=True)
        for side, values in times.items():
            rows[(dtype, side)]["encode_s"] = statistics.median(values)
    print(f"\n{args.shape} encoder, 4 x 256 tokens, {threads} threads, {args.runs} alternating runs, "
          f"load average now {os.getloadavg()}\n")
    print("| dtype | engine | load s | encode s (median) | peak RSS | RSS before load |")
    print("|---|---|---|---|---|---|")
    for (dtype, side), r in rows.items():
        print(f"| {dtype} | {side} | {r['load_s']:.2f} | {r['encode_s']:.2f} | {_gib(r['peak_rss'])} | "
              f"{_gib(r['rss_before'])} |")
    for dtype in ("float32", "bfloat16"):
        ref, ours = rows[(dtype, "transformers")], rows[(dtype, "mt5fn")]
        print(f"\n{dtype}: mt5fn / transformers: load {ours['load_s'] / ref['load_s']:.2f}x, encode "
              f"{ours['encode_s'] / ref['encode_s']:.2f}x, peak RSS {ours['peak_rss'] / ref['peak_rss']:.2f}x "
              f"(above the pre-load baseline: "
              f"{(ours['peak_rss'] - ours['rss_before']) / (ref['peak_rss'] - ref['rss_before']):.2f}x)")
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)


def precision(_args: argparse.Namespace) -> None:
    import torch
    import transformers

    import mt5fn

    cfg = mt5fn.MT5Config(model_type="t5", vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=8,
                          feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0)
    params = mt5fn.init_params(cfg, seed=0)
    encoder = {"shared": params["shared"], "encoder": params["encoder"]}
    for index, factor in ((1, 1e5), (3, 3e4), (5, 1e4)):  # T5 v1.1's large FFN outputs
        encoder["encoder"]["blocks"][index]["mlp"]["wo"] = encoder["encoder"]["blocks"][index]["mlp"]["wo"] * factor
    folder = tempfile.mkdtemp(prefix="mt5fn-precision-")
    mt5fn.save_pretrained(encoder, cfg, folder)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, cfg.vocab_size, (4, 64), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0
    keep = mask.bool()

    def hf(dtype, cast_all=False):
        model = transformers.T5EncoderModel.from_pretrained(folder, dtype=torch.float32 if cast_all else dtype)
        model = model.half() if cast_all else model
        model.set_attn_implementation("eager")
        return model(input_ids=ids, attention_mask=mask, output_hidden_states=True)

    with torch.inference_mode():
        full = hf(torch.float32)
        reference = full.last_hidden_state.double()
        peak = max(h.abs().max().item() for h in full.hidden_states[1:-1])
        print(f"T5 v1.1-shaped encoder, 8 layers, d_model 512; float32 residual stream peaks at {peak:.3g}\n")
        print("| engine | dtype | relative error | max error / max activation | finite |")
        print("|---|---|---|---|---|")

        def row(name, dtype, hidden):
            h = hidden.double()
            relative = ((h - reference)[keep].norm() / reference[keep].norm()).item()
            worst = ((h - reference)[keep].abs().max() / reference[keep].abs().max()).item()
            print(f"| {name} | {dtype} | {relative:.2e} | {worst:.2e} | {bool(torch.isfinite(h).all())} |")

        for dtype, name in ((torch.float16, "float16 (wo float32)"), (torch.bfloat16, "bfloat16")):
            low_cfg, low = mt5fn.load_pretrained(folder, dtype=dtype)
            row("mt5fn", name, mt5fn.encode(low, low_cfg, ids, mask))
            row("transformers", name, hf(dtype).last_hidden_state)
        fp8_folder = os.path.join(folder, "fp8")
        mt5fn.save_pretrained(encoder, cfg, fp8_folder, dtype=torch.float8_e4m3fn)
        fp8_cfg, fp8 = mt5fn.load_pretrained(fp8_folder, dtype=torch.float32)
        row("mt5fn", "float8_e4m3fn saved (scale_weight), run in float32", mt5fn.encode(fp8, fp8_cfg, ids, mask))
        full_cfg, full_params = mt5fn.load_pretrained(folder)
        half = mt5fn.tree_map(lambda t: t.half(), full_params)
        row("mt5fn", "float16, wo cast too", mt5fn.encode(half, full_cfg, ids, mask))
        row("transformers", "float16, wo cast too (.half())", hf(torch.float16, cast_all=True).last_hidden_state)
    shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="speed", choices=("speed", "precision"))
    parser.add_argument("--shape", default="xl", choices=sorted(SHAPES))
    parser.add_argument("--runs", type=int, default=3, help="timed encodes per side, alternating, after a warm-up")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dir", default=None, help="keep the saved model here (reused when present)")
    args = parser.parse_args()
    speed(args) if args.mode == "speed" else precision(args)


if __name__ == "__main__":
    main()
