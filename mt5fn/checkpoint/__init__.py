"""The checkpoint room: Hugging Face directories (safetensors, sharded, ``.bin``, encoder-only)
and single weight files (float8 included), llama.cpp's GGUF files, the HF <-> pytree names, the crash-safe writes every
saved file goes through, and the rule that a checkpoint reads no file from outside itself."""

from ._atomic import (atomic_directory, atomic_write_bytes, atomic_write_text, check_not_an_input,
                      check_output_target, fsync_tree, recover_directory)
from ._closed import checked_path, one_version
from ._hf_names import from_hf_state_dict, to_hf_state_dict
from ._gguf_read import describe_gguf
from ._pretrained import (ENCODER_CLASSES, load_pretrained, read_config, resolve_dtype, save_checkpoint, save_gguf_file,
                          save_pretrained)
from ._weights import load_bin, weights_layout
from ._safetensors_io import parse_size

__all__ = ["ENCODER_CLASSES", "atomic_directory", "atomic_write_bytes", "atomic_write_text", "check_not_an_input",
           "check_output_target", "checked_path", "one_version", "from_hf_state_dict", "fsync_tree", "load_bin",
           "load_pretrained", "parse_size", "read_config", "recover_directory",
           "resolve_dtype", "save_checkpoint", "save_gguf_file", "save_pretrained", "describe_gguf", "to_hf_state_dict", "weights_layout"]
