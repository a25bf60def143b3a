"""Kernel choice by measurement (``mt5fn.kernels.kernel_choice``): the fastest form is kept, remembered
per machine and product, and a bad cache file is ignored, never trusted.

The timings here come from a fake clock, so each test knows which form must win.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import mt5fn
from mt5fn.kernels import candidate_forms, kernel_choice, linear, linear_form, relayout_linear


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """Measuring mode with the cache file under ``tmp_path`` and an empty in-memory table."""
    monkeypatch.setenv("MT5FN_KERNEL_CACHE", "on")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kernel_choice.forget()
    yield tmp_path
    kernel_choice.forget()


def _fake_speeds(monkeypatch, seconds_by_form: dict[str, float]) -> list[str]:
    """Make ``time_call`` report ``seconds_by_form[linear_form(leaf)]``; returns the forms timed."""
    timed: list[str] = []
    real = kernel_choice.choose

    def choose(name, candidates, rule, measure):
        def fake(leaf):
            timed.append(linear_form(leaf))
            return seconds_by_form[linear_form(leaf)]
        return real(name, candidates, rule, fake)

    monkeypatch.setattr("mt5fn.kernels._layouts.choose", choose)
    return timed


def test_the_fastest_form_is_kept_and_remembered(measured, monkeypatch):
    weight = torch.randn(512, 256)
    timed = _fake_speeds(monkeypatch, {"dense": 3.0, "columns": 1.0, "onednn": 2.0})
    form = relayout_linear(weight, 1, min_numel=0)
    assert linear_form(form) == "columns"
    assert sorted(timed) == ["columns", "dense", "onednn"]
    timed.clear()
    assert linear_form(relayout_linear(weight, 1, min_numel=0)) == "columns"
    assert timed == []  # remembered: nothing timed again
    table = json.loads((measured / "mt5fn" / "kernels.json").read_text())
    assert list(table["choices"].values()) == ["columns"]


def test_another_row_count_is_another_choice(measured, monkeypatch):
    weight = torch.randn(512, 256)
    _fake_speeds(monkeypatch, {"dense": 1.0, "columns": 2.0, "onednn": 3.0})
    assert linear_form(relayout_linear(weight, 1, min_numel=0)) == "dense"
    _fake_speeds(monkeypatch, {"dense": 3.0, "onednn": 1.0})
    assert linear_form(relayout_linear(weight, 8, min_numel=0)) == "onednn"
    assert len(kernel_choice.choices()) == 2


def test_a_new_process_reuses_the_file(measured, monkeypatch):
    weight = torch.randn(512, 256)
    _fake_speeds(monkeypatch, {"dense": 3.0, "columns": 1.0, "onednn": 2.0})
    relayout_linear(weight, 1, min_numel=0)
    code = ("import torch, mt5fn; from mt5fn.kernels import kernel_choice as k; "
            "print(sorted(k.choices().values()))")
    env = {**os.environ, "MT5FN_KERNEL_CACHE": "on", "XDG_CACHE_HOME": str(measured)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['columns']"


@pytest.mark.parametrize("content", [b"not json {", b'{"version": 1, "choices": {"k": 3}}', b'[1, 2]',
                                     b'{"version": 99, "choices": {}}', b"\xff\xfe"])
def test_a_corrupt_or_foreign_file_is_ignored_with_a_warning_and_rebuilt(measured, monkeypatch, content):
    path = measured / "mt5fn" / "kernels.json"
    path.parent.mkdir()
    path.write_bytes(content)
    _fake_speeds(monkeypatch, {"dense": 1.0, "columns": 2.0, "onednn": 3.0})
    with pytest.warns(UserWarning, match="ignoring the kernel-choice file"):
        form = relayout_linear(torch.randn(512, 256), 1, min_numel=0)
    assert linear_form(form) == "dense"
    assert json.loads(path.read_text())["version"] == kernel_choice.FILE_VERSION  # rebuilt


def test_off_mode_measures_but_writes_no_file(measured, monkeypatch):
    monkeypatch.setenv("MT5FN_KERNEL_CACHE", "off")
    _fake_speeds(monkeypatch, {"dense": 1.0, "columns": 2.0, "onednn": 3.0})
    assert linear_form(relayout_linear(torch.randn(512, 256), 1, min_numel=0)) == "dense"
    assert not (measured / "mt5fn").exists()


def test_deterministic_mode_never_times(measured, monkeypatch):
    monkeypatch.setenv("MT5FN_KERNEL_CACHE", "deterministic")
    monkeypatch.setattr(kernel_choice, "time_call", lambda *a, **k: pytest.fail("timed in deterministic mode"))
    weight = torch.randn(512, 256)
    assert linear_form(relayout_linear(weight, 1, min_numel=0)) == "columns"
    assert linear_form(relayout_linear(weight, 8, min_numel=0)) in ("onednn", "dense")
    assert not (measured / "mt5fn").exists()


def test_an_unknown_mode_is_a_named_error(monkeypatch):
    monkeypatch.setenv("MT5FN_KERNEL_CACHE", "sometimes")
    with pytest.raises(ValueError, match="MT5FN_KERNEL_CACHE must be one of on, off, deterministic, got 'sometimes'"):
        relayout_linear(torch.randn(512, 256), 1, min_numel=0)


def test_measured_forms_compute_the_same_product(measured):
    """Real timing on this machine: whatever wins, the product is linear's."""
    weight = torch.randn(1024, 256)
    x = torch.randn(3, 256)
    for rows in (1, 3):
        form = relayout_linear(weight, rows, min_numel=0)
        torch.testing.assert_close(linear(x[:rows], form), x[:rows] @ weight.T, rtol=1e-5, atol=1e-4)


def test_every_candidate_is_a_plain_pytree_leaf():
    weight = torch.randn(256, 128)
    for leaf in (weight, mt5fn.quant.quantize_weight(weight)):
        candidates, rule = candidate_forms(leaf, 1)
        assert rule in candidates
        for build in candidates.values():
            built = build()
            leaves = torch.utils._pytree.tree_leaves(built)
            assert leaves and all(isinstance(t, torch.Tensor) for t in leaves)
            assert linear_form(built) is not None


def test_the_command_line_lays_out_a_model_and_lists_the_choices(measured, tmp_path):
    cfg = mt5fn.MT5Config(model_type="mt5", vocab_size=300, d_model=256, d_kv=32, d_ff=512, num_layers=1,
                          num_heads=8)
    mt5fn.save_pretrained(mt5fn.init_params(cfg, seed=0), cfg, tmp_path / "model")
    env = {**os.environ, "MT5FN_KERNEL_CACHE": "on", "XDG_CACHE_HOME": str(measured)}
    out = subprocess.run([sys.executable, "-m", "mt5fn", "kernels", "--model", str(tmp_path / "model"), "--rows", "2"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "mode: on" in out.stdout and str(measured / "mt5fn" / "kernels.json") in out.stdout
    assert "dense|float32|300x256|rows 2 -> " in out.stdout  # the untied head, measured at 2 rows
    assert json.loads((measured / "mt5fn" / "kernels.json").read_text())["choices"]


def test_a_tree_already_in_the_int8_x_int8_form_decodes():
    """Packed forms cannot be stacked: a tree laid out before keeps them as separate leaves."""
    cfg = mt5fn.MT5Config(model_type="mt5", vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    quantized = mt5fn.quantize(mt5fn.init_params(cfg, seed=0), cfg, "int8")

    def dynamic(node):
        if isinstance(node, dict):
            if linear_form(node) == "int8":
                candidates, _ = candidate_forms(node, None)
                return candidates.get("int8-dynamic", lambda: node)()
            return {key: dynamic(value) for key, value in node.items()}
        return [dynamic(value) for value in node] if isinstance(node, list) else node

    tree = dynamic(quantized)
    ids = torch.randint(2, 64, (2, 5))
    out = mt5fn.generate(tree, cfg, ids, max_new_tokens=4)
    prepared = mt5fn.prepare_decoding(tree, cfg, rows=2)
    assert torch.equal(mt5fn.generate(prepared, cfg, ids, max_new_tokens=4), out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_one_row_int8_x_int8_product_is_a_row_of_the_many_row_one(dtype):
    """One row takes its own path (oneDNN applies the row's scale and writes x's dtype): the same values as
    that row inside a product of several rows, to the dtype's round-off."""
    from mt5fn.kernels._int8_dynamic import available, int8_dynamic_linear, pack
    if not available():
        pytest.skip("this torch build has no oneDNN int8 linear")
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 64, generator=generator)
    scale = weight.abs().amax(1) / 127
    leaf = pack((weight / scale[:, None]).round().to(torch.int8), scale.to(dtype))
    rows = torch.randn(5, 64, generator=generator).to(dtype)
    many = int8_dynamic_linear(rows, leaf)  # (5, 96)
    for index in range(5):
        one = int8_dynamic_linear(rows[index:index + 1], leaf)  # (1, 96)
        assert one.dtype == dtype and one.shape == (1, 96)
        tolerance = 4 * torch.finfo(dtype).eps * many[index].abs().max()
        assert (one[0].float() - many[index].float()).abs().max() <= tolerance
