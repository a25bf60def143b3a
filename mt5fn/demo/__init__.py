"""``mt5fn demo``: a small multilingual mT5 trained from scratch on a checkable task
(numbers in words in four languages -> digits), with nothing downloaded."""

from ._run import DemoResult, run_demo

__all__ = ["DemoResult", "run_demo"]
