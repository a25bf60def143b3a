"""``GenerationConfig``: the settings of one ``generate`` call, frozen and validated.

Field names are transformers' (``generation_config.json``), so a checkpoint's
file reads straight in (``from_hf``) and ``to_hf`` writes one transformers
reads. Validation happens once, in ``__post_init__``; ``generate(...,
config=gc, **overrides)`` builds ``dataclasses.replace(gc, **overrides)``, so
an override is validated the same way.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from .. import checks as check
from ..checks import read_json


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """How ``generate`` decodes (transformers' names and meanings).

    ``max_new_tokens`` generated tokens at most (required by ``generate``);
    ``num_beams == 1``: greedy, or sampling with ``do_sample`` (``temperature``,
    ``top_k``, ``top_p``); ``num_beams > 1``: beam search ranked by
    ``sum log p / length ** length_penalty``, stopping per ``early_stopping``
    (True / False / "never"), returning the ``num_return_sequences`` best.
    ``min_new_tokens`` bans EOS until that many tokens exist;
    ``repetition_penalty`` and ``no_repeat_ngram_size`` act on the decoder ids.
    ``output_scores``: ``generate`` returns ``(sequences, scores, sequences_scores)``
    (``mt5fn.decoding.GenerateOutput``) instead of the ids alone.
    """

    max_new_tokens: int | None = None
    min_new_tokens: int = 0
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    output_scores: bool = False

    def __post_init__(self) -> None:
        def fix(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        check.check_optional_int("max_new_tokens", self.max_new_tokens, 1)
        check.check_int("min_new_tokens", self.min_new_tokens, 0)
        check.check_int("num_beams", self.num_beams, 1)
        check.check_int("num_return_sequences", self.num_return_sequences, 1)
        check.check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, 0)
        check.check_bool("do_sample", self.do_sample)
        check.check_bool("output_scores", self.output_scores)
        fix("temperature", check.check_real("temperature", self.temperature))
        if self.do_sample and self.temperature <= 0.0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature!r} "
                             "(for greedy decoding use do_sample=False)")
        if self.do_sample:
            check.check_scale("temperature", self.temperature)
        check.check_optional_int("top_k", self.top_k, 1)
        if self.top_p is not None:
            fix("top_p", check.check_real("top_p", self.top_p))
            if not 0.0 < self.top_p <= 1.0:
                raise ValueError(f"top_p must lie in (0, 1], got {self.top_p!r}")
        fix("length_penalty", check.check_real("length_penalty", self.length_penalty))
        if self.num_beams > 1:
            check.check_length_penalty(self.length_penalty, self.max_new_tokens)
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        fix("repetition_penalty", check.check_real("repetition_penalty", self.repetition_penalty))
        if self.repetition_penalty <= 0.0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        check.check_scale("repetition_penalty", self.repetition_penalty)
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError(f"num_return_sequences ({self.num_return_sequences}) must be <= num_beams "
                             f"({self.num_beams}) for beam search")
        if self.num_beams == 1 and not self.do_sample and self.num_return_sequences != 1:
            raise ValueError(f"greedy decoding returns one sequence per input; got num_return_sequences="
                             f"{self.num_return_sequences} (use num_beams >= num_return_sequences or do_sample=True)")

    def replace(self, **changes: Any) -> "GenerationConfig":
        """A copy with ``changes`` (validated again); unknown names are a ``TypeError`` naming them."""
        unknown = sorted(set(changes) - {field.name for field in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown generation settings {unknown}; GenerationConfig has "
                            f"{[field.name for field in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf(cls, config: Mapping[str, Any] | str | os.PathLike) -> "GenerationConfig":
        """From a ``generation_config.json`` (a path, or its dict). Keys mt5fn does not use are ignored,
        and so are nulls. Without ``max_new_tokens``, a ``max_length`` counts the decoder start token as
        transformers does for encoder-decoders: ``max_new_tokens = max_length - 1``; likewise without
        ``min_new_tokens`` a ``min_length`` gives ``min_new_tokens = min_length - 1``. ``top_k: 0`` is
        transformers' "no top-k" (None here), as ``top_p: 1.0`` already is. ``output_scores``
        counts only with ``return_dict_in_generate`` (without it transformers returns the ids alone too)."""
        if isinstance(config, (str, os.PathLike)):
            config = read_json(config)
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict or a path to generation_config.json, got {type(config).__name__}")
        names = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in config.items() if key in names and value is not None}
        length = config.get("max_length")
        if "max_new_tokens" not in values and check.is_int(length, 2):
            values["max_new_tokens"] = length - 1
        least = config.get("min_length")
        if "min_new_tokens" not in values and check.is_int(least, 2):
            values["min_new_tokens"] = least - 1
        if check.is_int(values.get("top_k"), 0, 0):  # transformers' "no top-k"
            values.pop("top_k")
        if values.get("output_scores") is True and config.get("return_dict_in_generate") is not True:
            values.pop("output_scores")
        return cls(**values)

    def to_hf(self) -> dict[str, Any]:
        """A ``generation_config.json`` dict (None fields left out)."""
        values = {key: value for key, value in dataclasses.asdict(self).items() if value is not None}
        if self.output_scores:
            values["return_dict_in_generate"] = True
        return values
