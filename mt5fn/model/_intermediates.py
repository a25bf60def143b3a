"""``intermediates``: every hidden state and attention map of a teacher-forced pass, as pure outputs.

What transformers returns with ``output_hidden_states=True, output_attentions=True``
(the basis of probing, attention maps and most interpretability work), computed
by the very functions ``forward`` runs: the stacks' loops (``_encode``,
``_decode``) and ``functional.encoder_block`` / ``decoder_block`` take an
optional observer that receives each block's output and each attention's
probabilities; ``forward`` passes none and pays nothing. The result is a
function of the inputs alone, so ``torch.func.grad`` (e.g. of one attention
weight with respect to the embeddings or parameters) and ``vmap`` work
through it.
"""

from __future__ import annotations

from torch import Tensor

from . import _preflight as preflight
from . import _validate as check
from ._config import MT5Config
from ._model import _decode, _embed_pair, _encode, lm_logits


def _recorder() -> tuple[dict[str, list[Tensor]], object]:
    seen: dict[str, list[Tensor]] = {"hidden": [], "self_attention": [], "cross_attention": []}

    def observe(what: str, value: Tensor) -> None:
        seen[what].append(value)

    return seen, observe


def intermediates(params: dict, cfg: MT5Config, input_ids: Tensor, decoder_input_ids: Tensor,
                  attention_mask: Tensor | None = None, decoder_attention_mask: Tensor | None = None
                  ) -> dict[str, Tensor | tuple[Tensor, ...]]:
    """The logits and every intermediate of ``forward``, with transformers' names and layout.

    input_ids: (B, S); decoder_input_ids: (B, T). Returns a dict:

    * ``logits`` (B, T, V): ``forward``'s (observed attention takes the plain-softmax path,
      ``forward`` SDPA where it can: the same function, to float round-off);
    * ``encoder_hidden_states``: ``num_layers + 1`` tensors (B, S, d) -- the
      embedding output, then the output of each block but the last, then the
      encoder output after the final norm (``encoder_last_hidden_state``, also
      a key), as transformers lays them out;
    * ``decoder_hidden_states``: ``num_decoder_layers + 1`` tensors (B, T, d), likewise
      (the last is the decoder output after the final norm, before the head's rescaling);
    * ``encoder_attentions`` (B, H, S, S), ``decoder_attentions`` (B, H, T, T) and
      ``cross_attentions`` (B, H, T, S): one per block, the probabilities after the softmax
      (rows sum to 1; padded keys get ~0, a causal mask 0 above the diagonal).

    Inputs are validated as ``forward`` validates them.
    """
    check.check_config(cfg)
    check.check_params(params, cfg, need_decoder=True)
    device = check.params_device(params)
    check.check_ids("input_ids", input_ids, cfg, device=device)
    check.check_mask("attention_mask", attention_mask, input_ids, "input_ids")
    check.check_ids("decoder_input_ids", decoder_input_ids, cfg, device=device)
    check.check_same_batch("decoder_input_ids", decoder_input_ids, input_ids, "input_ids")
    check.check_mask("decoder_attention_mask", decoder_attention_mask, decoder_input_ids, "decoder_input_ids")
    preflight.check_seq2seq(params, cfg, input_ids, decoder_input_ids, attention_mask, call="intermediates",
                            decoder_name="decoder_input_ids", logits="full")

    encoder_seen, encoder_observe = _recorder()
    decoder_seen, decoder_observe = _recorder()
    source, target = _embed_pair(params, input_ids, decoder_input_ids)
    encoder_hidden = _encode(params, cfg, input_ids, attention_mask, 0.0, None, source,
                             observe=encoder_observe)  # (B, S, d)
    hidden = _decode(params, cfg, decoder_input_ids, encoder_hidden, attention_mask, decoder_attention_mask, 0.0,
                     None, target, observe=decoder_observe)  # (B, T, d)
    return {
        "logits": lm_logits(params, cfg, hidden),  # (B, T, V)
        "decoder_hidden_states": (*decoder_seen["hidden"][:-1], hidden),
        "decoder_attentions": tuple(decoder_seen["self_attention"]),
        "cross_attentions": tuple(decoder_seen["cross_attention"]),
        "encoder_last_hidden_state": encoder_hidden,
        "encoder_hidden_states": (*encoder_seen["hidden"][:-1], encoder_hidden),
        "encoder_attentions": tuple(encoder_seen["self_attention"]),
    }
