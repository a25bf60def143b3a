"""A sweep of bad invocations of every ``mt5fn`` subcommand.

For each row of the table: the exit status is non-zero, standard error is
exactly one line (``mt5fn CMD: error: ...``) with no traceback, and no file
under the workspace -- the checkpoint, the data and every output path -- is
created, changed or removed. Most rows run in-process (``mt5fn.cli.main``,
fast); a few run ``python -m mt5fn`` as a subprocess to see the real stderr
and exit status of a binary standard input.

``test_every_subcommand_is_swept`` fails when a subcommand is added without
rows here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import mt5fn
import spm
import train_fixtures
from mt5fn.cli import build_parser, main


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The workspace: a tiny checkpoint with its tokenizer, data files, a plain file to nest outputs under,
    corrupt config files, and where outputs would go."""
    root = tmp_path_factory.mktemp("sweep")
    tokenizer = mt5fn.Tokenizer.from_pretrained(spm.spiece_dir())
    cfg = mt5fn.MT5Config(vocab_size=len(tokenizer), d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=2,
                          model_type="mt5", dropout_rate=0.0)
    model = root / "model"
    mt5fn.save_pretrained(mt5fn.init_params(cfg, seed=1), cfg, model, tokenizer=tokenizer)
    data = train_fixtures.write_data(str(root / "data"), count=8)
    (root / "file.txt").write_text("a plain file, not a directory\n")
    binary = root / "binary"
    binary.mkdir()
    for name in os.listdir(model):
        (binary / name).write_bytes((model / name).read_bytes())
    (binary / "config.json").write_bytes(b"\xff\xfe\x00\x81 not text")
    bad_field = root / "bad_field"
    bad_field.mkdir()
    for name in os.listdir(model):
        (bad_field / name).write_bytes((model / name).read_bytes())
    config = json.loads((model / "config.json").read_text())
    (bad_field / "config.json").write_text(json.dumps({**config, "d_model": 0}))
    (root / "garbage.safetensors").write_bytes(b"\x00" * 64)
    # issue 21: deeply nested JSON, a garbage adapter, NaN weights, text in other encodings
    deep = root / "deep"
    deep.mkdir()
    for name in os.listdir(model):
        (deep / name).write_bytes((model / name).read_bytes())
    (deep / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    adapter = root / "bad_adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                              "target_modules": ["q", "v"]}))
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04\x95garbage, not a pickle of tensors")
    nan = root / "nan"
    mt5fn.save_pretrained(mt5fn.tree_map(lambda t: torch.full_like(t, float("nan")), mt5fn.init_params(cfg, seed=1))
                          if hasattr(mt5fn, "tree_map") else _nan_params(cfg), cfg, nan, tokenizer=tokenizer)
    (root / "utf16.txt").write_bytes("one two three\nfour five six\n".encode("utf-16"))
    (root / "nul.txt").write_bytes(b"one two\nthree\x00four\n")
    paths = dict(root=str(root), model=str(model), binary=str(binary), bad_field=str(bad_field),
                 blocker=str(root / "file.txt"), under=str(root / "file.txt" / "sub"), pairs=data["pairs"],
                 text=data["text"], missing=str(root / "does-not-exist"), garbage=str(root / "garbage.safetensors"),
                 new=str(root / "new-output"), deep=str(deep), bad_adapter=str(adapter), nan=str(nan),
                 utf16=str(root / "utf16.txt"), nul=str(root / "nul.txt"), datadir=os.path.dirname(data["pairs"]))
    return paths


def _nan_params(cfg):
    params = mt5fn.init_params(cfg, seed=1)

    def fill(node):
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value) for value in node]
        return torch.full_like(node, float("nan"))

    return fill(params)


def snapshot(root: str) -> dict[str, str]:
    """Every file and directory under ``root`` with a digest of its content."""
    out = {}
    for folder, dirs, files in os.walk(root):
        out[os.path.relpath(folder, root) + "/"] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return out


# (subcommand, argv with {placeholders} from the workspace, stdin bytes or None, what the error must mention)
ROWS = [
    # generate
    ("generate", "--model {missing} hi", None, "does-not-exist"),
    ("generate", "--model {blocker} hi", None, "file.txt"),
    ("generate", "--model {binary} hi", None, "config.json"),
    ("generate", "--model {bad_field} hi", None, "d_model"),
    ("generate", "--model {model} --max-new-tokens 0 hi", None, "max_new_tokens"),
    ("generate", "--model {model} --max-new-tokens x hi", None, "--max-new-tokens"),
    ("generate", "--model {model} --max-new-tokens 1000000000000 hi", None, "max_new_tokens=1000000000000"),
    ("generate", "--model {model} --num-beams 0 hi", None, "num_beams"),
    ("generate", "--model {model} --num-beams 2 --num-return-sequences 3 hi", None, "num_return_sequences"),
    ("generate", "--model {model} --sample --temperature nan hi", None, "temperature"),
    ("generate", "--model {model} --sample --temperature 1e-45 hi", None, "temperature"),
    ("generate", "--model {model} --sample --top-p 1.5 hi", None, "top_p"),
    ("generate", "--model {model} --sample --top-k 0 hi", None, "top_k"),
    ("generate", "--model {model} --num-beams 2 --length-penalty 5000 hi", None, "length_penalty"),
    ("generate", "--model {model} --repetition-penalty 1e-300 hi", None, "repetition_penalty"),
    ("generate", "--model {model} --seed 1180591620717411303424 hi", None, "--seed"),
    ("generate", "--model {model} --seed -1 hi", None, "--seed"),
    ("generate", "--model {model} --device cuda:7 hi", None, "--device"),
    ("generate", "--model {model} --device nonsense hi", None, "--device"),
    ("generate", "--model {model} --batch-size 0 hi", None, "--batch-size"),
    ("generate", "--model {model} --profile {under} hi", None, "--profile"),
    ("generate", "--model {model} --profile {blocker} hi", None, "--profile"),
    ("generate", "--model {model} --dtype float64 hi", None, "--dtype"),
    ("generate", "--model {model} --bogus hi", None, "--bogus"),
    ("generate", "--model {model}", b"\xff\xfe\x00\x81 binary\n", "stdin"),
    ("generate", "--model {model}", b"caf\xe9 latin-1\n", "stdin"),
    ("generate", "--model {model}", ("word " * 200_000).encode() + b"\n", "needs about"),
    # convert
    ("convert", "{missing} {new}", None, "does-not-exist"),
    ("convert", "{binary} {new}", None, "config.json"),
    ("convert", "{bad_field} {new}", None, "d_model"),
    ("convert", "{model} {blocker}", None, "file.txt"),
    ("convert", "{model} {under}", None, "file.txt"),
    ("convert", "{model} {new} --max-shard-size lots", None, "lots"),
    ("convert", "{model} {new} --max-shard-size 0", None, "shard"),
    ("convert", "{model} {new} --dtype int8", None, "--dtype"),
    ("convert", "{garbage} {new}", None, "garbage.safetensors"),
    ("convert", "{model} {new} --config mt5-nonexistent", None, "mt5-nonexistent"),
    ("convert", "{model} {new} --tokenizer {missing}", None, "does-not-exist"),
    # info
    ("info", "{missing}", None, "does-not-exist"),
    ("info", "{binary}", None, "config.json"),
    ("info", "{bad_field}", None, "d_model"),
    ("info", "{garbage}", None, "garbage.safetensors"),
    ("info", "{blocker}", None, "file.txt"),
    # train
    ("train", "--data {missing} --out {new} --preset mt5-small --steps 1 --batch-size 2", None, "does-not-exist"),
    ("train", "--data {pairs} --out {under} --config {pairs} --steps 1 --batch-size 2", None, "file.txt"),
    ("train", "--data {pairs} --out {new} --preset mt5-small --steps 0 --batch-size 2", None, "--steps"),
    ("train", "--data {pairs} --out {new} --preset mt5-small --steps 1 --batch-size 0", None, "--batch-size"),
    ("train", "--data {pairs} --out {new} --preset mt5-small --steps 1 --batch-size 2 --lr nan", None, "--lr"),
    ("train", "--data {pairs} --out {new} --preset mt5-small --steps 1 --batch-size 2 --seed -5", None, "--seed"),
    ("train", "--data {pairs} --out {new} --preset mt5-small --steps 1 --batch-size 2 --device cuda:7", None,
     "--device"),
    ("train", "--data {pairs} --out {new} --preset mt5-nano --steps 1 --batch-size 2", None, "mt5-nano"),
    ("train", "--data {pairs} --out {new} --config {binary}/config.json --steps 1 --batch-size 2", None,
     "config.json"),
    ("train", "--data {pairs} --out {new} --preset mt5-small --steps 1 --batch-size 2 --profile {under}", None,
     "--profile"),
    ("train", "--data {pairs} --out {new} --preset mt5-small --steps 1 --batch-size 2 --dropout 1.5", None,
     "dropout"),
    ("train", "--data {pairs} --out {new} --steps x --batch-size 2", None, "--steps"),
    # evaluate
    ("evaluate", "--model {missing} --data {pairs}", None, "does-not-exist"),
    ("evaluate", "--model {model} --data {missing}", None, "does-not-exist"),
    ("evaluate", "--model {binary} --data {pairs}", None, "config.json"),
    ("evaluate", "--model {model} --data {pairs} --num-beams 0", None, "beams"),
    ("evaluate", "--model {model} --data {pairs} --batch-size 0", None, "batch"),
    ("evaluate", "--model {model} --data {pairs} --max-new-tokens 0", None, "max"),
    ("evaluate", "--model {model} --data {pairs} --seed 1180591620717411303424", None, "--seed"),
    ("evaluate", "--model {model} --data {pairs} --device cuda:7", None, "--device"),
    ("evaluate", "--model {model} --data {pairs} --out {under}", None, "--out"),
    ("evaluate", "--model {model} --data {pairs} --predictions {under}", None, "--predictions"),
    # issue 21: bad files the library reads, unbounded sizes, outputs onto inputs
    ("generate", "--model {deep} hi", None, "config.json"),
    ("info", "{deep}", None, "config.json"),
    ("convert", "{deep} {new}", None, "config.json"),
    ("generate", "--model {model} --adapter {bad_adapter} hi", None, "adapter_model.bin"),
    ("generate", "--model {nan} --sample hi", None, "nan"),
    ("generate", "--model {model}/config.json hi", None, "give the checkpoint or tokenizer folder"),
    ("generate", "--model {model} --num-beams 20000 --max-new-tokens 2000 hi", None, "MT5FN_MAX_WORK"),
    ("train", "--data {utf16} --out {new} --config {model}/config.json --tokenizer {model} --steps 1 "
     "--batch-size 2", None, "UTF-16"),
    ("train", "--data {nul} --out {new} --config {model}/config.json --tokenizer {model} --steps 1 "
     "--batch-size 2", None, "nul.txt:2"),
    ("train", "--data {pairs} --out {new} --config {model}/config.json --tokenizer {model} --steps 1 "
     "--batch-size 2 --mode supervised --max-input-length 1000000000", None, "--max-input-length"),
    ("train", "--data {pairs} --out {new} --from-checkpoint {model} --steps 1 --batch-size 2 --mode supervised "
     "--lora 1000000000", None, "--lora"),
    ("train", "--data {text} --out {new} --config {model}/config.json --tokenizer {model} --steps 1 "
     "--batch-size 2 --streaming --shuffle-buffer 1000000000000000", None, "--shuffle-buffer"),
    ("train", "--data {datadir}/* --out {datadir}/run --config {model}/config.json --tokenizer {model} --steps 1 "
     "--batch-size 2", None, "--out"),
    ("evaluate", "--model {model} --data {pairs} --predictions {missing}/p.txt", None, "--predictions"),
    ("evaluate", "--model {model} --data {pairs} --out {pairs}", None, "--out"),
    # kernels
    ("kernels", "--model {missing}", None, "does-not-exist"),
    ("kernels", "--model {deep}", None, "config.json"),
    # demo: every row must fail before any training starts
    ("demo", "--out {under}", None, "--out"),
    ("demo", "--out {blocker}", None, "--out"),
    ("demo", "--seed 1180591620717411303424 --out {new}", None, "--seed"),
    ("demo", "--steps x --out {new}", None, "--steps"),
]
ENCODE_ROWS = [
    ("encode", "--model {missing} --out {new}.safetensors hi", None, "does-not-exist"),
    ("encode", "--model {binary} --out {new}.safetensors hi", None, "config.json"),
    ("encode", "--model {model} --out {under} hi", None, "--out"),
    ("encode", "--model {model} --out {root} hi", None, "--out"),
    ("encode", "--model {model} --out {new}.safetensors --device cuda:7 hi", None, "--device"),
    ("encode", "--model {model} --out {new}.safetensors", b"\xff\xfe\x00\x81 binary\n", "stdin"),
    ("encode", "--model {model} --out {model}/model.safetensors hi", None, "--out"),
    ("encode", "--model {model} --out {new}.safetensors --max-length 1000000000 hi", None, "--max-length"),
]


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(action.choices)


def _rows():
    commands = _subcommands()
    rows = ROWS + ENCODE_ROWS
    return [pytest.param(*row, id=f"{row[0]}: {row[1][:60]}") for row in rows if row[0] in commands]


@contextlib.contextmanager
def _stdin(data: bytes | None):
    """``sys.stdin`` reading ``data`` as the interpreter would (UTF-8, strict), or an empty stdin."""
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data or b""), encoding="utf-8")
    try:
        yield
    finally:
        sys.stdin = old


@pytest.fixture
def clean(ws):
    """Remove what a failing row may have created, so one failure does not cascade into the next rows."""
    yield
    for path in (ws["new"], ws["new"] + ".safetensors"):
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


@pytest.mark.parametrize("command,argv,stdin,mentions", _rows())
def test_bad_invocation_fails_in_one_line_and_changes_nothing(ws, clean, command, argv, stdin, mentions):
    before = snapshot(ws["root"])
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), _stdin(stdin):
        try:
            code = main([command, *argv.format(**ws).split()])
        except SystemExit as exit_:  # argparse
            code = exit_.code
        except BaseException as error:  # noqa: BLE001 -- anything escaping main is a traceback
            pytest.fail(f"mt5fn {command} {argv} raised {type(error).__name__}: {error}")
    lines = err.getvalue().splitlines()
    assert code not in (0, None), f"exit status {code}; stdout {out.getvalue()[:200]!r}"
    assert len(lines) == 1, f"stderr is not one line: {err.getvalue()[:2000]}"
    assert lines[0].startswith(f"mt5fn {command}: error: "), lines[0]
    assert "Traceback" not in lines[0]
    assert mentions in lines[0], lines[0]
    assert snapshot(ws["root"]) == before, "the invocation changed files under the workspace"
    assert not os.path.exists(ws["new"])


def test_every_subcommand_is_swept():
    swept = {row[0] for row in ROWS + ENCODE_ROWS}
    assert _subcommands() <= swept, f"subcommands without sweep rows: {sorted(_subcommands() - swept)}"


@pytest.mark.parametrize("stdin", [b"\xff\xfe\x00\x81 binary\n", b"ok line\n\xc3\x28 broken\n"])
def test_binary_stdin_in_a_real_process(ws, stdin):
    """The interpreter's own stdin (UTF-8 mode off and on): one line on stderr, non-zero exit, no traceback."""
    for utf8_mode in ("0", "1"):
        env = {**os.environ, "PYTHONUTF8": utf8_mode}
        result = subprocess.run([sys.executable, "-m", "mt5fn", "generate", "--model", ws["model"]], input=stdin,
                                capture_output=True, env=env, timeout=300)
        lines = [line for line in result.stderr.decode(errors="replace").splitlines()
                 if line.startswith("mt5fn") or "Traceback" in line or "Error" in line]
        assert result.returncode != 0 and lines and lines[0].startswith("mt5fn generate: error: "), result.stderr
        assert not any("Traceback" in line for line in lines) and len(lines) == 1, result.stderr
        assert "stdin" in lines[0]
