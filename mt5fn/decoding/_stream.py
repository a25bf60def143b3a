"""``stream``: greedy or sampled decoding that hands over each step's tokens as soon as they exist.

The same decoding as ``generate`` -- same validation, same cached steps, same
token choice, so the tokens streamed are exactly the columns ``generate``
returns after the prefix -- but the loop is a Python iterator: each ``next()``
runs one decoder step and yields the (N,) tokens it chose, N = batch x
num_return_sequences; finished rows yield ``pad_token_id``; iteration ends
when every row has emitted EOS or ``max_new_tokens`` steps ran. Between
steps nothing of the decoder's state (inference mode, thread count) leaks into
the caller's code. Beam search is refused: its best hypothesis is only known
at the end.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor

from ..checks import preflight
from ..model import MT5Config
from ._generate import Request, processing, start_decoding, validate
from ._generation_config import GenerationConfig
from ._sampling import sample_steps
from ._threads import intra_op_threads


def stream(params: dict, cfg: MT5Config, input_ids: Tensor | None, attention_mask: Tensor | None = None,
           config: GenerationConfig | None = None, *, generator: torch.Generator | None = None,
           encoder_outputs: Tensor | None = None, decoder_input_ids: Tensor | None = None,
           **overrides: Any) -> Iterator[Tensor]:
    """Iterate over the generated tokens, one (N,) LongTensor per decoder step.

    Arguments as ``generate`` (greedy or ``do_sample``; ``num_return_sequences``
    rows per input when sampling). ``torch.stack(list(stream(...)), 1)`` equals
    ``generate(...)[:, P:]`` (P: the decoder prefix). Bad arguments raise here,
    before the first step.
    """
    request = validate(params, cfg, input_ids, attention_mask, config, generator, encoder_outputs,
                       decoder_input_ids, overrides)
    gc = request.gc
    if gc.num_beams > 1:
        raise ValueError(f"stream decodes greedily or by sampling; num_beams={gc.num_beams} asks for beam search, "
                         "whose best hypothesis is known only at the end (use generate)")
    if gc.output_scores:
        raise ValueError("stream yields tokens only; output_scores=True is a generate setting "
                         "(generate(..., output_scores=True) returns the scores with the sequences)")
    source = input_ids if encoder_outputs is None else encoder_outputs[..., 0]  # (B, S)
    preflight.check_generate(params, cfg, source, attention_mask, max_new_tokens=gc.max_new_tokens, num_beams=1,
                             num_return_sequences=gc.num_return_sequences, beam_search=False)
    return _steps(params, cfg, input_ids, attention_mask, request, generator, encoder_outputs)


def _steps(params: dict, cfg: MT5Config, input_ids: Tensor | None, attention_mask: Tensor | None,
           request: Request, generator: torch.Generator | None, encoder_outputs: Tensor | None) -> Iterator[Tensor]:
    gc, prefix = request.gc, request.prefix
    repeat = gc.num_return_sequences
    with torch.inference_mode():
        decoder = start_decoding(params, cfg, input_ids, attention_mask, gc, repeat=repeat,
                                 prefix_length=prefix.shape[1], encoder_outputs=encoder_outputs)
        rows = prefix.repeat_interleave(repeat, dim=0)  # (N, P)
        sequences = torch.full((rows.shape[0], rows.shape[1] + gc.max_new_tokens), cfg.pad_token_id,
                               dtype=torch.long, device=rows.device)
        sequences[:, :rows.shape[1]] = rows
    steps = sample_steps(decoder.step, cfg, processing(cfg, gc), sequences, rows.shape[1], gc.max_new_tokens,
                         generator)
    while True:
        with torch.inference_mode(), intra_op_threads(decoder.step_threads):
            tokens = next(steps, None)
        if tokens is None:
            return
        yield tokens
