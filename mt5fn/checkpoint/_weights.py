"""The tensors of a checkpoint, opened lazily: names, shapes and dtypes first, bytes on demand.

``load_pretrained`` first matches names and shapes against the config, and
only then reads the tensors it keeps, one at a time. An ``encoder_only`` load
of a full checkpoint therefore never touches the decoder's bytes: safetensors
files are memory-mapped and a tensor costs resident memory only once read,
``.bin`` files are opened with ``torch.load(mmap=True)`` where their format
allows. Every file is checked to lie inside the checkpoint (``_closed``).
"""

from __future__ import annotations

import json
import os
import pickle
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from . import _safetensors_io as st
from ._closed import checked_path

BIN_NAME = "pytorch_model.bin"
BIN_INDEX_NAME = "pytorch_model.bin.index.json"

_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
              "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


@dataclass(frozen=True)
class TensorInfo:
    file: str
    shape: tuple[int, ...]
    dtype: torch.dtype | str  # a str for dtypes torch has no name for (e.g. safetensors' F8_E8M0)


class _Safetensors:
    """One memory-mapped safetensors file; ``load`` returns a view of the map (no copy)."""

    def __init__(self, file: str):
        from safetensors import SafetensorError, safe_open

        self.file = file
        self._offsets: dict[str, tuple[int, int]] | None = None
        try:
            # ``read`` reads through this descriptor, opened with the map: a save that swaps the folder
            # later cannot make it read another version's file of the same name at this one's offsets.
            self._fd = os.open(file, os.O_RDONLY)
            weakref.finalize(self, os.close, self._fd)
            self._handle = safe_open(file, framework="pt")
            self.info = {}
            for name in self._handle.keys():
                part = self._handle.get_slice(name)
                dtype = part.get_dtype()
                self.info[name] = TensorInfo(file, tuple(part.get_shape()), _ST_DTYPES.get(dtype, dtype))
        except SafetensorError as error:
            raise ValueError(f"{file}: not a readable safetensors file ({error}); "
                             "it may be truncated or corrupt") from None
        except (OSError, RuntimeError) as error:
            # torch's memory map reports a file that vanished after safetensors opened it (a save
            # swapping the folder) as a RuntimeError: one clear error, which the reader retries on.
            raise ValueError(f"{file}: cannot read ({error})") from None

    def load(self, name: str) -> Tensor:
        from safetensors import SafetensorError

        try:
            return self._handle.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as error:
            raise ValueError(f"{self.file}: cannot read tensor {name!r} ({error})") from None

    def read(self, name: str) -> Tensor:
        """A private copy read with plain file reads, for a tensor about to be converted anyway: unlike
        the memory map, its bytes stop counting as resident memory once the converted tensor is made."""
        info = self.info[name]
        if not isinstance(info.dtype, torch.dtype):
            return self.load(name)
        if self._offsets is None:
            size = int.from_bytes(os.pread(self._fd, 8, 0), "little")
            header = json.loads(os.pread(self._fd, size, 8))
            self._offsets = {key: (8 + size + value["data_offsets"][0], 8 + size + value["data_offsets"][1])
                             for key, value in header.items() if key != "__metadata__"}
        begin, end = self._offsets[name]
        if end == begin:
            return torch.empty(info.shape, dtype=info.dtype)
        buffer = bytearray(end - begin)
        view, done = memoryview(buffer), 0
        while done < len(buffer):  # one read returns at most ~2 GiB on Linux
            count = os.preadv(self._fd, [view[done:]], begin + done)
            if count == 0:
                raise ValueError(f"{self.file}: tensor {name!r} is cut short; the file may be truncated")
            done += count
        return torch.frombuffer(buffer, dtype=torch.uint8).view(info.dtype).reshape(info.shape)


class _Pickle:
    """One ``.bin`` state dict through the weights-only unpickler (memory-mapped when the format allows)."""

    def __init__(self, file: str):
        self.file = file
        state = load_bin(file)
        self._state = state
        self.info = {name: TensorInfo(file, tuple(t.shape), t.dtype) for name, t in state.items()}

    def load(self, name: str) -> Tensor:
        return self._state[name]

    read = load


def load_bin(file: str) -> dict[str, Tensor]:
    """A ``.bin`` state dict; a pickle that would build anything but tensors is refused, never run."""
    def load(mmap: bool) -> Any:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            state = load(mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error) and "zip" not in str(error):
                raise
            state = load(mmap=False)  # the pre-1.6 (non-zip) format cannot be memory-mapped
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"{file}: refused to load: the pickle holds something other than tensors, "
                         f"and only weights-only pickles are read (no code from a checkpoint runs). "
                         f"{first}") from None
    except Exception as error:  # noqa: BLE001 -- garbage makes torch's unpickler fail in many ways (IndexError, ...)
        if isinstance(error, OSError) and not os.path.isfile(file):
            raise
        raise ValueError(f"{file}: not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{file}: expected a dict of tensor names to tensors, got {type(state).__name__}")
    return own_storage(state)


def own_storage(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with every tensor that shares storage with an earlier one copied apart, as transformers
    does: a pickle may store ``lm_head`` as a view of ``shared``, and an aliased leaf would make an
    in-place update or a gradient step on one weight change the other."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        if tensor.numel() and pointer in seen:
            tensor = tensor.clone()
        elif tensor.numel():
            seen.add(pointer)
        out[name] = tensor
    return out


class Weights:
    """Every tensor of a checkpoint by name: ``info[name]`` (file, shape, dtype) and ``load(name)``."""

    def __init__(self, readers: list[Any], description: str):
        self.description = description
        self.info: dict[str, TensorInfo] = {}
        self._reader: dict[str, Any] = {}
        for reader in readers:
            for name, info in reader.info.items():
                self.info[name] = info
                self._reader[name] = reader

    def __contains__(self, name: str) -> bool:
        return name in self.info

    def __iter__(self) -> Iterator[str]:
        return iter(self.info)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: info.shape for name, info in self.info.items()}

    def load(self, name: str) -> Tensor:
        """The stored tensor (a view of the memory map: no copy)."""
        return self._reader[name].load(name)

    def read(self, name: str) -> Tensor:
        """The stored tensor as a private copy, for one about to be converted (see ``_Safetensors.read``)."""
        return self._reader[name].read(name)

    def renamed(self, mapping: dict[str, str]) -> "Weights":
        """The same tensors under new names (``mapping``: new name -> stored name)."""
        out = Weights([], self.description)
        for new, old in mapping.items():
            out.info[new] = self.info[old]
            out._reader[new] = _Renamed(self._reader[old], old)
        return out

    def where(self, name: str) -> str:
        """`` [in FILE]`` for error messages."""
        return f"  [in {self.info[name].file}]" if name in self.info else ""


@dataclass(frozen=True)
class _Renamed:
    reader: Any
    name: str

    def load(self, _name: str) -> Tensor:
        return self.reader.load(self.name)

    def read(self, _name: str) -> Tensor:
        return self.reader.read(self.name)


def weights_layout(path: str) -> tuple[str, str, bool]:
    """``(format, file, sharded)`` of the weights in directory ``path``: the single file or the shard
    index transformers would read, safetensors before ``.bin``."""
    for kind, single, index in (("safetensors", st.WEIGHTS_NAME, st.INDEX_NAME), ("bin", BIN_NAME, BIN_INDEX_NAME)):
        for name, sharded in ((single, False), (index, True)):
            if os.path.isfile(os.path.join(path, name)):
                return kind, checked_path(path, name), sharded
    raise FileNotFoundError(f"{path}: no weights found; expected one of {st.WEIGHTS_NAME}, {st.INDEX_NAME}, "
                            f"{BIN_NAME} or {BIN_INDEX_NAME}")


def open_file(file: str) -> Any:
    """A reader for one weights file: safetensors by content, else a weights-only pickle."""
    with open(file, "rb") as handle:
        head = handle.read(16)
    if file.endswith(".safetensors") or _looks_like_safetensors(head):
        return _Safetensors(file)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch's zip format, or a legacy pickle
        return _Pickle(file)
    raise ValueError(f"{file}: not a weights file: neither safetensors nor a PyTorch checkpoint "
                     f"(it starts with {head[:8]!r})")


def _looks_like_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then the JSON header opening with '{'.
    return len(head) >= 9 and head[8:9] == b"{"


def open_directory(path: str) -> Weights:
    """The weights of a checkpoint directory (single file or shards, safetensors or ``.bin``)."""
    kind, file, sharded = weights_layout(path)
    reader: Callable[[str], Any] = _Safetensors if kind == "safetensors" else _Pickle
    if not sharded:
        return Weights([reader(file)], file)
    weight_map = st.read_index(file)
    readers = [reader(checked_path(path, shard)) for shard in sorted(set(weight_map.values()))]
    weights = Weights(readers, file)
    absent = [name for name, shard in weight_map.items()
              if name not in weights.info or weights.info[name].file != os.path.join(path, shard)]
    if absent:
        raise ValueError(f"{file}: names tensors its shards do not hold: "
                         f"{', '.join(sorted(absent)[:5])}{' ...' if len(absent) > 5 else ''}")
    return weights
