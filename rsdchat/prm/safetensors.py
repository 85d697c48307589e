"""The safetensors file format with numpy alone: a little-endian u64 header size, a JSON header
naming each tensor's dtype, shape and byte range, then the raw bytes.

The reward head is small and written here; a checkpoint's backbone is copied tensor by tensor
without being decoded (its bf16 bytes stay as they are), so no torch is needed.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
ITEM_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "I8": 1, "BOOL": 1}


class SafetensorsError(ValueError):
    """A file that is not safetensors, or is cut short."""


@dataclass(frozen=True)
class Entry:
    """One tensor in a file: dtype name, shape, and where its bytes lie (from the data start)."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Header:
    entries: dict[str, Entry]
    metadata: dict[str, str]
    data_start: int


def read_header(path: Path) -> Header:
    with path.open("rb") as file:
        head = file.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: too short to be a safetensors file")
        (size,) = struct.unpack("<Q", head)
        if size > 100 * 2**20:
            raise SafetensorsError(f"{path}: not a safetensors file (header of {size} bytes)")
        try:
            raw = json.loads(file.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SafetensorsError(f"{path}: not a safetensors file (header is not JSON)") from None
    metadata = raw.pop("__metadata__", None) or {}
    entries = {}
    total = path.stat().st_size - 8 - size
    try:
        for name, info in raw.items():
            start, end = (int(x) for x in info["data_offsets"])
            shape = tuple(int(x) for x in info["shape"])
            dtype = str(info["dtype"])
            if not 0 <= start <= end <= total or end - start != ITEM_SIZE.get(dtype, 0) * int(np.prod(shape)):
                raise SafetensorsError(f"{path}: tensor {name!r} lies outside the file or has the wrong size")
            entries[name] = Entry(dtype, shape, start, end)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SafetensorsError):
            raise
        raise SafetensorsError(f"{path}: malformed header ({exc})") from None
    return Header(entries, {str(k): str(v) for k, v in metadata.items()}, 8 + size)


def load(path: Path) -> tuple[dict[str, npt.NDArray[Any]], dict[str, str]]:
    """Every tensor of a small file (F32/F16/F64/I32/I64), and its metadata."""
    header = read_header(path)
    data = path.read_bytes()[header.data_start :]
    tensors = {}
    for name, entry in header.entries.items():
        if entry.dtype not in DTYPES:
            raise SafetensorsError(
                f"{path}: tensor {name!r} is {entry.dtype}, which this reader does not decode"
            )
        array = np.frombuffer(
            data[entry.start : entry.end], dtype=np.dtype(DTYPES[entry.dtype]).newbyteorder("<")
        )
        tensors[name] = array.reshape(entry.shape).astype(DTYPES[entry.dtype])
    return tensors, header.metadata


Source = npt.NDArray[Any] | tuple[Path, Header, Entry]  # an array, or a tensor to copy from a file


def save(path: Path, tensors: Mapping[str, Source], metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` (arrays, or tensors of other files copied byte for byte) to `path`.

    Written to a temporary file beside it and renamed into place: a kill leaves no half file.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, source in tensors.items():
        if isinstance(source, tuple):
            entry = source[2]
            dtype, shape, size = entry.dtype, list(entry.shape), entry.end - entry.start
        else:
            if source.dtype not in NAMES:
                raise SafetensorsError(f"tensor {name!r}: dtype {source.dtype} cannot be written")
            dtype, shape, size = NAMES[source.dtype], list(source.shape), source.nbytes
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as out:
            out.write(struct.pack("<Q", len(encoded)) + encoded)
            for source in tensors.values():
                if isinstance(source, tuple):
                    _copy(out, *source)
                else:
                    out.write(np.ascontiguousarray(source, dtype=source.dtype.newbyteorder("<")).tobytes())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _copy(out: IO[bytes], path: Path, header: Header, entry: Entry) -> None:
    with path.open("rb") as file:
        file.seek(header.data_start + entry.start)
        for chunk in _chunks(file, entry.end - entry.start):
            out.write(chunk)


def _chunks(file: IO[bytes], size: int, chunk: int = 16 * 2**20) -> Iterator[bytes]:
    while size > 0:
        data = file.read(min(chunk, size))
        if not data:
            raise SafetensorsError(f"{file.name}: cut short")
        size -= len(data)
        yield data
