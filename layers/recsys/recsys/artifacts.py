"""Artifacts as .npz: one writer and one reader for every kind the recommender stores.

Each file carries a `format` member naming its kind and version, "item_index/3": the
reader refuses a file of another kind or version, or one without a format, instead of
misreading it. Arrays are plain numeric or string arrays, never pickled objects (the
reader loads with allow_pickle=False, the writer refuses object arrays). Members are
written with a fixed timestamp, so the same content is the same bytes: a replayed batch
leaves its S3 object byte-identical, and a release's sha256 says what it holds.

Members are stored uncompressed, so a file on disk is read memory-mapped (`read_npz` of a
Path): its arrays are views of the file, paged in as they are read, never a second copy.
"""
from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_MEMBER = "format"
_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip member can carry

Meta = dict[str, str | float]


class ArtifactFormatError(ValueError):
    """A file that is not the kind and version of artifact its reader expects."""

    def __init__(self, expected: str, found: str) -> None:
        super().__init__(f"artifact format: expected {expected}, found {found}")
        self.expected = expected
        self.found = found


@dataclass(frozen=True)
class Artifact:
    """What a file holds: its declared arrays, and its scalar metadata (every other 0-d member)."""

    arrays: dict[str, np.ndarray]
    meta: Meta


def format_name(kind: str, version: int) -> str:
    return f"{kind}/{version}"


def write_npz(kind: str, version: int, arrays: Mapping[str, np.ndarray],
              meta: Mapping[str, str | float] | None = None) -> bytes:
    """The .npz bytes of `arrays` and scalar `meta`, with the format member first."""
    members: dict[str, np.ndarray] = {FORMAT_MEMBER: np.array(format_name(kind, version))}
    for name, array in arrays.items():
        members[_new_name(name, members)] = np.asanyarray(array)
    for name, value in (meta or {}).items():
        scalar = np.array(value)
        if scalar.ndim != 0 or scalar.dtype.kind not in "biufU":
            raise ValueError(f"{kind} metadata {name}={value!r}: metadata is one number or string")
        members[_new_name(name, members)] = scalar
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in members.items():
            if array.dtype.hasobject:
                raise ValueError(f"{kind} member {name}: an object array would need pickle")
            with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=_TIMESTAMP), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return buffer.getvalue()


def read_npz(data: bytes | Path, kind: str, version: int, fields: Collection[str], optional: Collection[str] = (),
             bare_version: bool = False) -> Artifact:
    """The arrays named in `fields` (each required) and `optional` (absent ones left out), and
    the file's other members as metadata, if the file is `kind` at `version`.

    `bare_version`: also read a file whose format is this version's number alone, as files
    of this kind written before formats named their kind have it."""
    expected = format_name(kind, version)
    try:
        npz: Any = _Mapped(data) if isinstance(data, Path) else np.load(io.BytesIO(data), allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, struct.error) as error:
        raise ArtifactFormatError(expected, f"no .npz archive ({error})") from None
    if not isinstance(npz, (np.lib.npyio.NpzFile, _Mapped)):
        raise ArtifactFormatError(expected, "a bare array, not an .npz archive")
    with _closing(npz):
        found = _declared_format(npz)
        if found != expected and not (bare_version and found == _bare(version)):
            raise ArtifactFormatError(expected, found)
        missing = sorted(set(fields) - set(npz.files))
        if missing:
            raise ArtifactFormatError(expected, f"{found} without {', '.join(missing)}")
        arrays = {name: npz[name] for name in (*fields, *optional) if name in npz.files}
        meta: Meta = {}
        for name in npz.files:
            if name in arrays or name == FORMAT_MEMBER:
                continue
            value = npz[name]
            if value.ndim != 0:
                raise ArtifactFormatError(expected, f"{found} with an unknown array {name}")
            meta[name] = value.item()
    return Artifact(arrays, meta)


class _Mapped:
    """The members of an .npz file on disk as read-only memory maps (small ones read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._members: dict[str, tuple[np.dtype, tuple[int, ...], bool, int]] = {}
        with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
            for info in archive.infolist():
                if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
                    raise zipfile.BadZipFile(f"{info.filename}: not a stored .npy member")
                f.seek(info.header_offset)
                local = f.read(30)
                if local[:4] != b"PK\x03\x04":
                    raise zipfile.BadZipFile(f"{info.filename}: no local header")
                name_length, extra_length = struct.unpack("<HH", local[26:30])
                f.seek(info.header_offset + 30 + name_length + extra_length)
                major, _ = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(f)
                if dtype.hasobject:
                    raise zipfile.BadZipFile(f"{info.filename}: an object array would need pickle")
                self._members[info.filename.removesuffix(".npy")] = (dtype, shape, fortran, f.tell())
        self.files = list(self._members)

    def __getitem__(self, name: str) -> np.ndarray:
        dtype, shape, fortran, offset = self._members[name]
        count = int(np.prod(shape)) if shape else 1
        if count * dtype.itemsize < 1 << 16:  # small: read, not mapped
            with open(self.path, "rb") as f:
                f.seek(offset)
                flat = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype, count=count)
            return flat.reshape(shape, order="F" if fortran else "C").copy()
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape,
                         order="F" if fortran else "C")


@contextmanager
def _closing(npz: Any) -> Iterator[Any]:
    try:
        yield npz
    finally:
        if isinstance(npz, np.lib.npyio.NpzFile):
            npz.close()


def _declared_format(npz: Any) -> str:
    """The format the file declares, in words when it declares none."""
    if FORMAT_MEMBER not in npz.files:
        return "no format member"
    value = npz[FORMAT_MEMBER]
    if value.ndim == 0 and value.dtype.kind == "U":
        return str(value.item())
    if value.ndim == 0 and value.dtype.kind in "iu":
        return _bare(int(value.item()))
    return f"a format member of dtype {value.dtype} and shape {value.shape}"


def _bare(version: int) -> str:
    return f"format {version} without a kind"


def _new_name(name: str, members: Mapping[str, np.ndarray]) -> str:
    if name in members:
        raise ValueError(f"artifact member {name!r} given twice (or it is the reserved {FORMAT_MEMBER!r})")
    return name
