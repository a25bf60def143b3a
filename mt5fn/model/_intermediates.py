"""``intermediates``: every hidden state and attention map of a teacher-forced pass, as pure outputs.

What transformers returns with ``output_hidden_states=True, output_attentions=True``
(the basis of probing, attention maps and most interpretability work), computed
by the very functions ``forward`` runs: the stacks run each block through a
wrapper (``_stacks``' one extension seam) that records the block's output and
its attention probabilities (``functional.attention_probabilities``, from the
same projections of the same normed inputs). ``forward`` passes no wrapper and
pays nothing. The result is a function of the inputs alone, so
``torch.func.grad`` (e.g. of one attention weight with respect to the
embeddings or parameters) and ``vmap`` work through it.
"""

from __future__ import annotations

from torch import Tensor

from ..checks import preflight
from ..functional import attention_probabilities, attention_sublayer, padding_bias, rms_norm
from ._config import MT5Config
from ._model import check_pair, embed_pair, lm_logits
from ._stacks import Block, decoder_stack, encoder_stack


def _observing_encoder(cfg: MT5Config, hidden_states: list[Tensor], attentions: list[Tensor]):
    def wrap(block: Block) -> Block:
        def observed(p: dict, hidden: Tensor, bias: Tensor | None, layer: int) -> Tensor:
            normed = rms_norm(p["attn_norm"], hidden, cfg.layer_norm_epsilon)  # (B, S, d)
            attentions.append(attention_probabilities(p["attn"], normed, None, bias, num_heads=cfg.num_heads))
            hidden = block(p, hidden, bias, layer)  # (B, S, d)
            hidden_states.append(hidden)
            return hidden

        return observed

    return wrap


def _observing_decoder(cfg: MT5Config, encoder_hidden: Tensor, cross_bias: Tensor | None,
                       hidden_states: list[Tensor], self_attentions: list[Tensor], cross_attentions: list[Tensor]):
    eps, heads = cfg.layer_norm_epsilon, cfg.num_heads

    def wrap(block: Block) -> Block:
        def observed(p: dict, hidden: Tensor, bias: Tensor | None, layer: int) -> Tensor:
            normed = rms_norm(p["self_attn_norm"], hidden, eps)  # (B, T, d)
            self_attentions.append(attention_probabilities(p["self_attn"], normed, None, bias, num_heads=heads))
            # the cross-attention reads the hidden state after the self-attention sublayer
            middle = attention_sublayer(p["self_attn"], p["self_attn_norm"], cfg, hidden, None, bias)  # (B, T, d)
            normed = rms_norm(p["cross_attn_norm"], middle, eps)  # (B, T, d)
            cross_attentions.append(attention_probabilities(p["cross_attn"], normed, encoder_hidden, cross_bias,
                                                            num_heads=heads))
            hidden = block(p, hidden, bias, layer)  # (B, T, d)
            hidden_states.append(hidden)
            return hidden

        return observed

    return wrap


def intermediates(params: dict, cfg: MT5Config, input_ids: Tensor, decoder_input_ids: Tensor,
                  attention_mask: Tensor | None = None, decoder_attention_mask: Tensor | None = None
                  ) -> dict[str, Tensor | tuple[Tensor, ...]]:
    """The logits and every intermediate of ``forward``, with transformers' names and layout.

    input_ids: (B, S); decoder_input_ids: (B, T). Returns a dict:

    * ``logits`` (B, T, V): ``forward``'s;
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
    check_pair(params, cfg, input_ids, decoder_input_ids, "decoder_input_ids", attention_mask,
               decoder_attention_mask)
    preflight.check_seq2seq(params, cfg, input_ids, decoder_input_ids, attention_mask, call="intermediates",
                            decoder_name="decoder_input_ids", logits="full")

    encoder_states, encoder_attentions = [], []
    decoder_states, self_attentions, cross_attentions = [], [], []
    source, target = embed_pair(params, input_ids, decoder_input_ids)
    encoder_hidden = encoder_stack(params, cfg, source, attention_mask,
                                   wrap=_observing_encoder(cfg, encoder_states, encoder_attentions))  # (B, S, d)
    observe = _observing_decoder(cfg, encoder_hidden, padding_bias(attention_mask, encoder_hidden.dtype),
                                 decoder_states, self_attentions, cross_attentions)
    hidden = decoder_stack(params, cfg, target, encoder_hidden, attention_mask, decoder_attention_mask,
                           wrap=observe)  # (B, T, d)
    return {
        "logits": lm_logits(params, cfg, hidden),  # (B, T, V)
        "decoder_hidden_states": (target, *decoder_states[:-1], hidden),
        "decoder_attentions": tuple(self_attentions),
        "cross_attentions": tuple(cross_attentions),
        "encoder_last_hidden_state": encoder_hidden,
        "encoder_hidden_states": (source, *encoder_states[:-1], encoder_hidden),
        "encoder_attentions": tuple(encoder_attentions),
    }
