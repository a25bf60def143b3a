"""The README's Python examples run as written.

Every fenced ```python block is executed, in order, in one namespace (later
blocks build on earlier ones). A block that needs something a test machine
cannot have (a downloaded checkpoint) starts with the line
``# not run: <reason>`` and is only compiled, so it still must be valid Python.
"""

from __future__ import annotations

import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _python_blocks() -> list[str]:
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 4


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for index, block in enumerate(_python_blocks()):
        code = compile(block, f"README.md python block {index}", "exec")
        if block.lstrip().startswith("# not run:"):
            continue
        try:
            exec(code, namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            pytest.fail(f"README python block {index} failed: {type(error).__name__}: {error}\n{block}")
