"""File helpers shared by the loaders: `.npy` header checks, pairing files by name, PNG writing,
and the completion marker of generated datasets."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mlxkit._io import atomic_write_bytes, atomic_write_file

import numpy as np

# The dtypes mlx-data's `load_numpy` reads (little-endian, C order).
_NPY_DTYPES = {"|u1", "|i1", "<i4", "<i8", "<f4", "<f8"}


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a `.npy` file, read from its header; refuses files mlx-data cannot read.

    A pickled file (object dtype) is refused without being unpickled.
    """
    with open(path, "rb") as file:
        try:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
            else:
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(file)
        except ValueError as error:
            raise ValueError(f"{path} is not a valid .npy file: {error}") from None
    if dtype.hasobject:
        raise ValueError(
            f"{path} holds a pickled object array (dtype {dtype}); mlxkit never unpickles data "
            "(allow_pickle=False). Re-save it as a numeric array: "
            "np.save(path, np.asarray(array, dtype='float32'))."
        )
    if fortran_order or dtype.str not in _NPY_DTYPES:
        raise ValueError(
            f"{path} holds a {'Fortran-ordered ' if fortran_order else ''}{dtype.str} array; "
            f"mlx-data reads C-ordered arrays of dtypes {sorted(_NPY_DTYPES)}. Re-save it with "
            "np.save(path, np.ascontiguousarray(array, dtype='float32'))."
        )
    return tuple(shape), dtype


_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of a PNG
_TAIL = 1024  # bytes searched for the end marker (encoders may pad after it)


def check_image_complete(path: str | os.PathLike) -> None:
    """Refuses a JPEG or PNG file that does not end with its end marker: a truncated download.

    mlx-data would decode such a file with the missing part grey and only a libjpeg warning on
    stderr, so the marker (`FFD9` for JPEG, the `IEND` chunk for PNG) is looked for among the
    last bytes first. Other formats pass unchecked.

    Example:
        >>> check_image_complete("cat.txt")  # not an image: nothing to check
    """
    kind = os.path.splitext(os.fspath(path))[1].lower()
    marker = {".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9", ".png": _PNG_END}.get(kind)
    if marker is None:
        return
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - _TAIL))
        tail = file.read()
    if marker not in tail:
        what = "end-of-image marker FFD9" if marker != _PNG_END else "IEND chunk"
        raise ValueError(
            f"{os.fspath(path)} is truncated or corrupt: its last {min(size, _TAIL)} of {size} "
            f"bytes hold no {what}. Download or copy the file again, or remove it."
        )


def pair_by_stem(folders: Mapping[str, Path], suffixes: Mapping[str, Iterable[str]]) -> list[dict]:
    """Pairs the files of several folders by file name without extension.

    Args:
        folders: Sample key -> folder, e.g. `{"image": root / "image", "depth": root / "depth"}`.
        suffixes: Sample key -> accepted extensions (lower case, with the dot).

    Returns:
        One dict of paths (as `str`) per name, sorted by name.
    """
    found: dict[str, dict[str, Path]] = {}
    for key, folder in folders.items():
        allowed = {s.lower() for s in suffixes[key]}
        files: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in allowed:
                continue
            if path.stem in files:
                raise ValueError(
                    f"{files[path.stem]} and {path} have the same name; each sample needs exactly "
                    f"one file in {folder}."
                )
            files[path.stem] = path
        if not files:
            raise FileNotFoundError(
                f"{folder} has no {'/'.join(sorted(allowed))} files for key {key!r}."
            )
        found[key] = files
    keys = list(folders)
    names = set().union(*(files.keys() for files in found.values()))
    for key in keys:
        missing = sorted(names - found[key].keys())
        if missing:
            others = [k for k in keys if k != key]
            example = next(found[k][missing[0]] for k in others if missing[0] in found[k])
            raise FileNotFoundError(
                f"{len(missing)} file(s) in {folders[key]} are missing, for example the {key} "
                f"file that pairs with {example} (looked for {folders[key] / missing[0]}.*). "
                f"Missing names: {missing[:5]}{' ...' if len(missing) > 5 else ''}"
            )
    for files in found.values():
        for path in files.values():
            check_image_complete(path)
    return [{key: str(found[key][name]) for key in keys} for name in _natural_sorted(names)]


def _natural_sorted(names: Iterable[str]) -> list[str]:
    """Sorts "2" before "10" so samples keep the order their numbered names suggest."""

    def key(name: str) -> tuple:
        return tuple(
            (0, int(part), "") if part.isdigit() else (1, 0, part) for part in _split(name)
        )

    return sorted(names, key=key)


def _split(name: str) -> list[str]:
    parts, current = [], ""
    for char in name:
        if current and char.isdigit() != current[-1].isdigit():
            parts.append(current)
            current = ""
        current += char
    return [*parts, current] if current else parts


def save_npy(path: Path, array: np.ndarray) -> None:
    """`np.save` through a temporary file and a rename (`mlxkit._io.atomic_write_file`)."""
    contiguous = np.ascontiguousarray(array)
    atomic_write_file(path, lambda tmp: np.save(tmp, contiguous, allow_pickle=False))


class GeneratedFolder:
    """The markers that let a generator skip finished work and redo interrupted work safely.

    `STARTED` is written before the first file and `DONE` (holding the parameters) after the last.
    A folder with `DONE` and the same parameters is reused; one with `STARTED` but no matching
    `DONE` is an interrupted or different run of this generator and is cleared; a non-empty folder
    with neither marker belongs to someone else and is refused. `exclusive()` serialises
    generators working on the same folder, e.g. every rank of a data-parallel run.
    """

    def __init__(self, root: Path, params: dict[str, Any], owned: Iterable[str]):
        self.root, self.params, self.owned = root, params, list(owned)
        self.done, self.started = root / "DONE", root / ".STARTED"

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Holds an advisory lock on `<root>/.lock` for as long as the block runs."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def is_complete(self) -> bool:
        if not self.done.is_file():
            return False
        try:
            return json.loads(self.done.read_text()) == self.params
        except (OSError, json.JSONDecodeError):
            return False

    def begin(self) -> None:
        generator = self.params["generator"]
        ours = self.started.is_file() or self.done.is_file()
        existing = [self.root / name for name in self.owned if (self.root / name).exists()]
        if existing and not ours:
            raise FileExistsError(
                f"{self.root} already holds {[str(p) for p in existing]}, not written by "
                f"{generator}. Pass an empty or new folder as `root`."
            )
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.started, json.dumps(self.params).encode())
        if self.done.exists():
            self.done.unlink()
        for folder in existing:
            for path in folder.rglob("*"):
                if path.is_file():
                    path.unlink()

    def finish(self) -> None:
        atomic_write_bytes(self.done, json.dumps(self.params, indent=2).encode())
        self.started.unlink(missing_ok=True)
