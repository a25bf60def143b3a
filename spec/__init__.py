"""The executable specification of mt5fn: Hypothesis properties, one module per invariant family.

Run with ``python -m pytest spec`` (``ci`` profile) or
``MT5FN_HYPOTHESIS_PROFILE=thorough python -m pytest spec``. Being a package
lets other tests ``from spec.strategies import configs``.
"""
