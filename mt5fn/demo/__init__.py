"""``mt5fn demo``: a small multilingual mT5 trained from scratch on a checkable task
(numbers in words in four languages -> digits), with nothing downloaded."""

from ._run import STEPS, DemoResult, run_demo

__all__ = ["STEPS", "DemoResult", "run_demo"]
