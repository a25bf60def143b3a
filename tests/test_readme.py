"""The README's Python examples run as written.

Every fenced ```python block is executed, in order, in one namespace (later
blocks build on earlier ones), in a scratch directory. Examples that load a
downloaded checkpoint (``mt5-small``) get a tiny stand-in saved there under
that name -- an mT5-shaped model with a small SentencePiece vocabulary -- so
the very code a reader runs is run here too. A block that needs something
else a test machine cannot have starts with ``# not run: <reason>`` and is
only compiled, so it still must be valid Python.
"""

from __future__ import annotations

import os
import re

import pytest

import mt5fn
from spm import spiece_dir

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _python_blocks() -> list[str]:
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 4


def _stand_in_checkpoint(path: str) -> None:
    """A tiny mT5 with a real SentencePiece tokenizer, saved like a downloaded hub directory."""
    tokenizer = mt5fn.Tokenizer.from_pretrained(spiece_dir())
    cfg = mt5fn.MT5Config(model_type="mt5", vocab_size=tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=64,
                          num_layers=2, num_heads=4)
    mt5fn.save_pretrained(mt5fn.init_params(cfg, seed=0), cfg, path, tokenizer=tokenizer)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _stand_in_checkpoint(str(tmp_path / "mt5-small"))
    namespace: dict = {"__name__": "__readme__"}
    for index, block in enumerate(_python_blocks()):
        code = compile(block, f"README.md python block {index}", "exec")
        if block.lstrip().startswith("# not run:"):
            continue
        try:
            exec(code, namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            pytest.fail(f"README python block {index} failed: {type(error).__name__}: {error}\n{block}")
