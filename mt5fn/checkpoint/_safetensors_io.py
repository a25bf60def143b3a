"""Reading and writing safetensors checkpoints, single-file or sharded.

Reading goes through ``safetensors.safe_open``, which memory-maps the file:
tensors are views of the page cache (copy-on-write), so loading a checkpoint
costs about its size in resident memory, not twice that. Writing splits the
tensors greedily into shards of at most ``max_shard_size`` bytes, named and
indexed as transformers does (``model-00001-of-00003.safetensors`` plus
``model.safetensors.index.json``).
"""

from __future__ import annotations

import json
import os
import re

from torch import Tensor

from ..checks import is_int

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(value: int | str) -> int:
    """Bytes from ``123``, ``"500MB"``, ``"5GB"`` (powers of 10) or ``"2GiB"`` (powers of 2)."""
    if is_int(value):
        if value < 1:
            raise ValueError(f"max_shard_size must be positive, got {value!r}")
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*", value.upper())
        if match:
            size = int(float(match.group(1)) * _UNITS[match.group(2) or ""])
            if size >= 1:
                return size
    raise ValueError(f"max_shard_size must be a positive byte count like 5000000, '500MB' or '5GB', got {value!r}")


def read_index(index_file: str) -> dict[str, str]:
    """``weight_map`` of a shard index, checked: every shard it names must exist."""
    from ..checks import read_json

    index = read_json(index_file)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index_file}: no 'weight_map' object mapping tensor names to shard files")
    folder = os.path.dirname(index_file)
    for shard in sorted(set(weight_map.values())):
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise ValueError(f"{index_file}: shard name {shard!r} is not a plain file name")
        if not os.path.isfile(os.path.join(folder, shard)):
            raise FileNotFoundError(f"{index_file}: names shard {shard!r}, which is missing from {folder!r}")
    return weight_map


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def plan_shards(tensors: dict[str, Tensor], max_bytes: int) -> list[list[str]]:
    """Names grouped into consecutive shards of at most ``max_bytes`` (a bigger tensor gets its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, tensor in tensors.items():
        nbytes = _nbytes(tensor)
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_safetensors(tensors: dict[str, Tensor], folder: str, max_bytes: int) -> list[str]:
    """Write ``tensors`` (no two sharing storage) into ``folder``; returns the file names written."""
    from safetensors.torch import save_file

    def save_file(part: dict[str, Tensor], file: str, metadata: dict[str, str]) -> None:
        from safetensors.torch import save_file as write

        try:
            write(part, file, metadata=metadata)
        except Exception as error:  # SafetensorError("... I/O error: No space left on device (os error 28)")
            code = re.search(r"\(os error (\d+)\)", str(error))
            if code is None or isinstance(error, OSError):
                raise
            number = int(code.group(1))
            raise OSError(number, f"{os.strerror(number)} (writing {os.path.basename(file)})") from None
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(file, 0o666 & ~mask)  # the library's writer creates 0600; new files follow the umask

    shards = plan_shards(tensors, max_bytes)
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(tensors, os.path.join(folder, WEIGHTS_NAME), metadata=metadata)
        return [WEIGHTS_NAME]
    weight_map: dict[str, str] = {}
    names = []
    for i, shard in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({name: tensors[name] for name in shard}, os.path.join(folder, file), metadata=metadata)
        weight_map.update(dict.fromkeys(shard, file))
        names.append(file)
    index = {"metadata": {"total_size": sum(_nbytes(t) for t in tensors.values())}, "weight_map": weight_map}
    with open(os.path.join(folder, INDEX_NAME), "w", encoding="utf-8") as handle:
        json.dump(index, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return [*names, INDEX_NAME]


def unshare(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU tensors, cloning any that overlaps the storage of an earlier one
    (safetensors refuses to store shared memory twice)."""
    seen: set[tuple[str, int]] = set()
    out = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        key = (str(tensor.device), tensor.untyped_storage().data_ptr())
        if key in seen:
            tensor = tensor.clone()
            key = (str(tensor.device), tensor.untyped_storage().data_ptr())
        seen.add(key)
        out[name] = tensor
    return out

