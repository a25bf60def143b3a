"""The README and every page of docs/ run as written, and hold together.

Every fenced ```python block of a page is executed, in order, in one namespace
per page (later blocks build on earlier ones; pages do not share state), in a
scratch directory. Examples that load a downloaded checkpoint (``mt5-small``)
get a tiny stand-in saved there under that name -- an mT5-shaped model with a
small SentencePiece vocabulary -- so the very code a reader runs is run here
too. A block that needs something else a test machine cannot have (a download,
a GPU, several machines) starts with ``# not run: <reason>`` and is only
compiled, so it still must be valid Python.

``docs/design.md`` is the contract: its blocks are signatures, not examples, so
instead of running them this checks that every ``mt5fn.*`` name it states
exists. Beside that: the README stays a front door (at most 250 lines, holding
the exact install and test commands ``.ci/run`` runs), every relative link of
the README, docs/ and tests/README.md leads to a file (and heading) that
exists, and tests/README.md indexes every test module.
"""

from __future__ import annotations

import pathlib
import re

import pytest

import mt5fn
from spm import spiece_dir

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DESIGN = DOCS / "design.md"
TESTS_INDEX = ROOT / "tests" / "README.md"
RUN_PAGES = [README] + sorted(p for p in DOCS.glob("*.md") if p != DESIGN)
ALL_PAGES = RUN_PAGES + [DESIGN, TESTS_INDEX]


def _name(page: pathlib.Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _python_blocks(page: pathlib.Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.S | re.M)


def _stand_in_checkpoint(path: str) -> None:
    """A tiny mT5 with a real SentencePiece tokenizer, saved like a downloaded hub directory."""
    tokenizer = mt5fn.Tokenizer.from_pretrained(spiece_dir())
    cfg = mt5fn.MT5Config(model_type="mt5", vocab_size=tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=64,
                          num_layers=2, num_heads=4)
    mt5fn.save_pretrained(mt5fn.init_params(cfg, seed=0), cfg, path, tokenizer=tokenizer)


def test_pages_have_python_examples():
    assert len(_python_blocks(README)) >= 2
    assert sum(len(_python_blocks(page)) for page in RUN_PAGES) >= 20


@pytest.mark.parametrize("page", RUN_PAGES, ids=_name)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _stand_in_checkpoint(str(tmp_path / "mt5-small"))
    namespace: dict = {"__name__": "__docs__"}
    for index, block in enumerate(_python_blocks(page)):
        code = compile(block, f"{_name(page)} python block {index}", "exec")
        if block.lstrip().startswith("# not run:"):
            continue
        try:
            exec(code, namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            pytest.fail(f"{_name(page)} python block {index} failed: {type(error).__name__}: {error}\n{block}")


def test_the_design_contract_names_only_what_exists():
    names = sorted(set(re.findall(r"\bmt5fn((?:\.[A-Za-z_]\w*)+)", DESIGN.read_text(encoding="utf-8"))))
    assert len(names) >= 20
    missing = []
    for name in names:
        obj = mt5fn
        for part in name.strip(".").split("."):
            if not hasattr(obj, part):
                missing.append("mt5fn" + name)
                break
            obj = getattr(obj, part)
    assert not missing, missing


def _ci_commands() -> list[str]:
    """The commands .ci/run runs under its '# --- README: ... ---' markers."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [lines[i + 1].strip() for i, line in enumerate(lines) if line.startswith("# --- README:")]


def test_the_readme_is_a_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    commands = _ci_commands()
    assert len(commands) == 2, commands  # install, test
    readme_lines = [line.split("#")[0].strip() for line in text.splitlines()]
    for command in commands:
        assert command in readme_lines, f".ci/run runs {command!r}, which the README does not show"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: pathlib.Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(m) for m in re.findall(r"^#+ (.*)$", text, flags=re.M)}


def test_relative_links_lead_somewhere():
    broken = []
    for page in ALL_PAGES:
        text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{_name(page)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{_name(page)}: {target} (no such heading)")
    assert not broken, broken


def test_the_tests_index_links_every_test_module():
    index = TESTS_INDEX.read_text(encoding="utf-8")
    linked = {(TESTS_INDEX.parent / target.partition("#")[0]).resolve()
              for target in re.findall(r"\]\(([^)\s]+)\)", index)}
    modules = sorted(p.resolve() for folder in ("tests", "spec") for p in (ROOT / folder).glob("test_*.py"))
    missing = [_name(m) for m in modules if m not in linked]
    assert not missing, f"tests/README.md does not link {missing}"
