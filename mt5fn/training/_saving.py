"""Saving a step: what goes into the checkpoint directory, from every kind of engine.

Rank 0 writes the model (a Hugging Face folder; under FSDP the weights are
gathered first, a collective every rank joins) or, for LoRA, only the adapter
in PEFT's format; then the tokenizer and the trainer state. Under FSDP every
rank also writes its optimizer shards into the same folder. The folder
appears atomically and ``OUT/latest`` moves to it (``_state.save_step``).
"""

from __future__ import annotations

import os
from typing import Any

from ..model import tree_map
from . import _distributed as D
from ._state import FORMAT_VERSION, SHARDED_OPTIMIZER, rng_states, save_step, write_state


class Saver:
    def __init__(self, out_dir: str, setup: Any, ctx: D.Dist) -> None:
        self.out_dir, self.setup, self.ctx = out_dir, setup, ctx
        self.sharded = hasattr(setup.engine, "save_optimizer")

    def _state(self, step: int, loss: float) -> dict[str, Any]:
        setup = self.setup
        state = {"format": FORMAT_VERSION, "step": step, "loss": loss, "scheduler": setup.scheduler.state_dict(),
                 "rng": rng_states(), "settings": setup.settings, "data": setup.batches.state(step),
                 "selection": setup.selection.state(), "sharded_optimizer": self.sharded}
        if not self.sharded:
            state["optimizer"] = setup.optimizer.state_dict()
        if setup.lora is not None:
            state["lora"] = setup.lora
        return state

    def save(self, step: int, loss: float) -> str:
        setup, ctx = self.setup, self.ctx
        engine = setup.engine
        params = engine.model_params()  # FSDP: gathers the shards (every rank takes part)
        state = self._state(step, loss) if ctx.is_main else None

        def write(tmp: str) -> None:
            detached = tree_map(lambda t: t.detach().cpu(), params if setup.lora is None else engine.adapters)
            if setup.lora is None:
                from ..checkpoint import save_pretrained

                save_pretrained(detached, setup.cfg, tmp, tokenizer=setup.tokenizer)
            else:
                from ..lora import save_adapter

                save_adapter(detached, setup.cfg, tmp)
                setup.tokenizer.save_pretrained(tmp)
            write_state(tmp, state)

        collective = None
        if self.sharded:
            def collective(tmp: str) -> None:
                engine.save_optimizer(os.path.join(tmp, SHARDED_OPTIMIZER))
        return save_step(self.out_dir, step, write, collective=collective,
                         share=lambda value: D.broadcast_object(ctx, value), is_main=ctx.is_main)

