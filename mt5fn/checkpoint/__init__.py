"""The checkpoint room: Hugging Face directories (safetensors, sharded, ``.bin``), the
HF <-> pytree names, and the atomic writes every saved file goes through."""

from ._atomic import atomic_directory, atomic_write_bytes, atomic_write_text, fsync_tree
from ._hf_names import from_hf_state_dict, to_hf_state_dict
from ._pretrained import load_pretrained, resolve_dtype, save_checkpoint, save_pretrained, weights_layout
from ._safetensors_io import parse_size

__all__ = ["atomic_directory", "atomic_write_bytes", "atomic_write_text", "from_hf_state_dict", "fsync_tree",
           "load_pretrained", "parse_size", "resolve_dtype", "save_checkpoint", "save_pretrained",
           "to_hf_state_dict", "weights_layout"]
