"""Reads the tensors of a `torch.save` file (.pth, .pt, .bin) into numpy, without torch.

torchvision's ImageNet weights and transformers' `pytorch_model.bin` files are written by
`torch.save` in its zip format (torch >= 1.6): a zip whose `<name>/data.pkl` pickles the object,
with every tensor pointing at a raw storage record `<name>/data/<key>`. This module unpickles
that object with an allow-list (mappings, lists, tuples and the tensor/parameter rebuild
functions; anything else, e.g. a pickled model class, is refused, as `torch.load(...,
weights_only=True)` would), and rebuilds each tensor as a numpy array from its storage, offset,
shape and strides. So weights load in a JAX install that has no torch, and start-up skips
torch's import (about 1 s).

Files in torch's pre-1.6 format (not a zip) are left to `torch.load` (`read`'s caller decides):
`read` raises `NotZipFormat` for them.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from fer_jax.errors import BadInputError

# torch's legacy (pre-1.6) files start with a pickled magic number: protocol 2, then LONG1 of 10 bytes
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
# what a file that is no torch file at all often is, by its first bytes
_OTHER_FORMATS = ((b"\x89HDF\r\n\x1a\n", "an HDF5 file (e.g. Keras .h5/.hdf5 weights)"),
                  (b"\x1aE\xdf\xa3", "a Matroska/WebM video"), (b"RIFF", "a RIFF file (AVI video, WAV sound)"),
                  (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"),
                  (b"\x93NUMPY", "a numpy .npy array"))


def describe_format(path: str) -> str:
    """What a file that is not a torch.save file looks like, by its first bytes ('' when unknown)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[4:8] == b"ftyp":
        return "an MP4/MOV video"
    if head.startswith(b"{") or head.startswith(b"["):
        return "a JSON file"
    return next((what for magic, what in _OTHER_FORMATS if head.startswith(magic)), "")

# torch's storage classes and dtypes as they appear in the pickle (`torch.FloatStorage`, `torch.float32`)
_STORAGES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,  # bytes; _rebuild_tensor_v3 names the dtype
}
_DTYPES = {
    "float64": np.float64, "double": np.float64, "float32": np.float32, "float": np.float32,
    "float16": np.float16, "half": np.float16, "bfloat16": ml_dtypes.bfloat16, "int64": np.int64,
    "long": np.int64, "int32": np.int32, "int": np.int32, "int16": np.int16, "short": np.int16,
    "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
}


class NotZipFormat(ValueError):
    """The file is not in torch's zip format (an old torch.save file, or not a torch file at all)."""


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_rest) -> np.ndarray:
    """A tensor from its flat storage: `size` elements from `offset`, `stride` in elements (a copy)."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return np.array(storage[offset])
    if any(s == 0 for s in size):
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size or offset < 0:
        raise ValueError(f"a tensor of shape {size} reaches past its storage of {storage.size} elements")
    view = np.lib.stride_tricks.as_strided(storage[offset:], size, [s * storage.itemsize for s in stride],
                                           writeable=False)
    return np.array(view, order="C")  # a contiguous copy


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *_metadata):
    return _rebuild_tensor(storage.view(np.dtype(dtype)) if storage.dtype != np.dtype(dtype) else storage,
                           offset, size, stride)


def _rebuild_parameter(data, *_rest):
    return data


_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "tuple"): tuple,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str, big_endian: bool):
        super().__init__(file)
        self.archive, self.prefix, self.path, self.big_endian = archive, prefix, path, big_endian
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _FUNCTIONS:
            return _FUNCTIONS[(module, name)]
        if module == "torch" and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        if module == "torch" and name in _DTYPES:
            return np.dtype(_DTYPES[name])
        raise pickle.UnpicklingError(
            f"{self.path} pickles {module}.{name}, which a weights file has no need of; only tensors in "
            "dicts/lists are read (save the weights with torch.save(model.state_dict(), path))")

    def persistent_load(self, pid) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self.path}: unknown persistent id {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else np.dtype(storage_type)
        if key not in self.storages:
            name = f"{self.prefix}data/{key}"
            try:
                raw = self.archive.read(name)
            except KeyError:
                raise ValueError(f"{self.path} lacks its storage record {name}; the file is damaged "
                                 "(download or save it again)") from None
            array = np.frombuffer(raw, dtype.newbyteorder(">") if self.big_endian else dtype)
            if array.size < numel:
                raise ValueError(f"{self.path}: storage {key} holds {array.size} elements, the pickle "
                                 f"says {numel}; the file is damaged (download or save it again)")
            self.storages[key] = array.astype(dtype, copy=False) if self.big_endian else array
        return self.storages[key]


def read(path: str | os.PathLike) -> Any:
    """The object a zip-format torch.save file holds, with every tensor as a numpy array.

    Raises NotZipFormat for a file that is not a zip (torch's legacy format needs torch.load),
    and ValueError naming the file when it is damaged or pickles anything but tensors in
    containers.
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise NotZipFormat(f"{path} is not a zip-format torch.save file")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
        if not pickles:
            raise NotZipFormat(f"{path} is a zip file but holds no data.pkl: not a torch.save file")
        prefix = pickles[0][: -len("data.pkl")]
        names = set(archive.namelist())
        big = prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() == b"big"
        with archive.open(pickles[0]) as f:
            try:
                return _Unpickler(f, archive, prefix, path, big).load()
            except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as e:
                raise ValueError(f"{path} could not be read as torch.save tensors ({type(e).__name__}: {e})") from e


def load(path: str | os.PathLike, *, hint: str = "") -> Any:
    """`read`, or torch.load(weights_only=True) for a legacy (pre-zip) file, which needs torch.

    Tensors come back as numpy arrays from `read`, as torch tensors from torch.load. `hint` ends
    the message of a file that cannot be read (what to save or pass instead).
    """
    path = os.fspath(path)
    try:
        return read(path)
    except NotZipFormat:
        pass
    with open(path, "rb") as f:
        legacy = f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC
    if not legacy:
        kind = describe_format(path)
        raise BadInputError(f"{path} is not a torch weights file (a .pth/.pt/.bin written by torch.save)"
                            + (f"; it is {kind}" if kind else "") + f"{hint or '. Pass the weights file itself.'}")
    try:
        import torch  # lazy: only torch's legacy (pre-1.6) file format needs it
    except ImportError as e:
        raise ImportError(f"{path} is in torch's legacy (pre-1.6) file format, which needs torch to read "
                          f"(pip install torch); or save it again with a recent torch{hint}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} could not be read as a torch state dict ({type(e).__name__}: {str(e)[:200]})"
                         f"{hint}") from e
