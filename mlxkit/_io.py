"""Atomic writes: every file and folder mlxkit writes appears whole or not at all.

One mechanism for every writer (checkpoints, weights, CSV logs, PNGs, generated datasets,
exports): the new content is written beside its destination under a name that carries the
writer's unique id, flushed to disk, and renamed into place.

- `atomic_write_file(path, write)`: `write(tmp)` fills a temporary file, then `os.replace`.
- `atomic_write_folder(path, write)`: `write(tmp)` fills a temporary folder, which is then
  swapped with the old one in one step (Linux `renameat2`, macOS `renamex_np`; elsewhere two
  renames) under an exclusive `fcntl` lock on the parent folder, so writers take turns and a
  reader holding the shared lock (`folder_lock(path, shared=True)`) never sees a partial
  folder. A writer killed between two renames leaves the old folder aside; `recover_folder`
  puts it back.
- Temporary (`.<name>.tmp-<id>`), old (`.old-<id>`) and deleted (`.del-<id>`) entries carry the
  writer's id (host, process, random token); only their writer removes them, or a later writer
  once that process is known to be dead.
- Errors name the path: `OSError`s and MLX's `[write] Unable to write ...` come back as an
  `OSError` saying which path could not be written and why (disk full, read-only, permission).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator

_HOST = socket.gethostname().replace("-", "_")
_KINDS = ("tmp", "old", "del")


def writer_id() -> str:
    """A name no other writer uses: host, process id and a random token."""
    return f"{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"


def check_folder_target(path: str | os.PathLike, argument: str = "path") -> str:
    """Returns `path` made absolute, refusing paths whose replacement would destroy a workspace.

    The empty path, `.`, the current working directory and its parents, the home directory and
    its parents, and filesystem roots and mount points are refused with a `ValueError`.

    Example:
        >>> check_folder_target("runs/ckpt").endswith("runs/ckpt")
        True
        >>> check_folder_target("")
        Traceback (most recent call last):
          ...
        ValueError: `path` is empty; ...
    """
    raw = os.fspath(path)
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(
            f"`{argument}` is empty; it would resolve to the working directory, whose contents "
            "would be replaced. Pass a folder name such as 'runs/ckpt'. "
            f"Received: {argument}={raw!r}"
        )
    target = os.path.abspath(raw)
    real = os.path.realpath(target)
    protected = {
        os.path.realpath(os.getcwd()): "the current working directory",
        os.path.realpath(os.path.expanduser("~")): "the home directory",
    }
    for folder, what in protected.items():
        if real == folder or folder.startswith(real.rstrip(os.sep) + os.sep):
            which = what if real == folder else f"a parent of {what}"
            raise ValueError(
                f"`{argument}` names {which} ({real}), whose contents a write would replace. "
                f"Pass a subfolder such as 'runs/ckpt'. Received: {argument}={raw!r}"
            )
    if os.path.dirname(real) == real or os.path.ismount(real):
        raise ValueError(
            f"`{argument}` names a filesystem root or mount point ({real}), whose contents a "
            f"write would replace. Pass a subfolder. Received: {argument}={raw!r}"
        )
    return target


@contextlib.contextmanager
def io_errors(path: str, action: str = "write") -> Iterator[None]:
    """Re-raises I/O failures inside the block as an `OSError` that names `path` and the cause.

    Covers Python's `OSError` (errno kept) and MLX's `RuntimeError`s from its file writers
    (`[write] Unable to write 8 bytes to file.`, `[save_safetensors] Failed to open file`).
    """
    try:
        yield
    except PathError:
        raise
    except OSError as error:
        raise PathError(path, action, error.strerror or str(error), error.errno) from error
    except RuntimeError as error:
        message = str(error)
        if not ("Unable to write" in message or "Failed to open" in message):
            raise
        raise PathError(path, action, message, None) from error


class PathError(OSError):
    """An I/O failure that names the path and the likely cause (disk full, read-only, permission).

    Example:
        >>> str(PathError("/runs/ckpt", "write", "No space left on device", errno.ENOSPC))
        "Cannot write '/runs/ckpt': No space left on device. ..."
    """

    def __init__(self, path: str, action: str, reason: str, code: int | None):
        self.message = f"Cannot {action} {path!r}: {reason.rstrip('.')}. {_hint(path, code)}"
        super().__init__(self.message.rstrip())
        self.errno = code
        self.filename = path

    def __str__(self) -> str:
        return self.message.rstrip()


def _hint(path: str, code: int | None) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if code == errno.ENOSPC or free == 0 or (code is None and free is not None and free < 2**20):
        return f"The disk holding {folder} is full ({free} bytes free): free space and retry."
    if code == errno.EROFS:
        return f"{folder} is on a read-only filesystem: write somewhere else."
    if code in (errno.EACCES, errno.EPERM):
        return f"This process may not write in {folder}: check its permissions."
    if free is not None:
        return (
            f"Check that the disk holding {folder} is not full ({free} bytes free) and that the "
            "folder is writable."
        )
    return ""


def _temporary(target: str, kind: str, uid: str, suffix: str = "") -> str:
    parent, name = os.path.split(target)
    return os.path.join(parent, f".{name}.{kind}-{uid}{suffix}")


def _fsync(path: str, *, folder: bool = False) -> None:
    handle = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
    try:
        os.fsync(handle)
    except OSError as error:  # some filesystems cannot fsync a directory
        if not folder or error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(handle)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def atomic_write_file(
    path: str | os.PathLike, write: Callable[[str], None], *, suffix: str | None = None
) -> str:
    """Calls `write(tmp)` to fill a temporary file beside `path`, then renames it onto `path`.

    Args:
        path: The destination file.
        write: Writes the content to the path it is given.
        suffix: The temporary file's ending (default: `path`'s extension, which writers such as
            `mx.save_safetensors` would otherwise append).

    Returns:
        `path`, absolute.

    Example:
        >>> def write(tmp):
        ...     with open(tmp, "w") as f:
        ...         f.write("hi")
        >>> path = atomic_write_file("runs/hello.txt", write)
    """
    target = os.path.abspath(os.fspath(path))
    ending = os.path.splitext(target)[1] if suffix is None else suffix
    tmp = _temporary(target, "tmp", writer_id(), ending)
    with io_errors(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            write(tmp)
            _fsync(tmp)
            os.replace(tmp, target)
        except BaseException:
            _remove(tmp)
            raise
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Writes `data` to `path` atomically (see `atomic_write_file`).

    Example:
        >>> path = atomic_write_bytes("runs/DONE", b"{}")
    """

    def write(tmp: str) -> None:
        with open(tmp, "wb") as file:
            file.write(data)

    return atomic_write_file(path, write, suffix="")


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike, *, shared: bool = False) -> Iterator[None]:
    """Holds the `fcntl` lock that guards the folder `path`: a `flock` on its parent folder.

    Writers take it exclusively around their renames (milliseconds); readers take it shared
    while they read, so they never see a folder between the two renames of a write. Locking the
    parent leaves no lock file behind; a reader whose parent folder is missing or unreadable
    (where no writer can be either) reads without it.

    Example:
        >>> os.makedirs("runs/ckpt", exist_ok=True)
        >>> with folder_lock("runs/ckpt", shared=True):
        ...     names = os.listdir("runs/ckpt")
    """
    target = os.path.abspath(os.fspath(path))
    try:
        handle = os.open(os.path.dirname(target), os.O_RDONLY)
    except OSError as error:
        if shared and error.errno in (errno.EACCES, errno.ENOENT, errno.EPERM):
            yield
            return
        raise
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        except OSError as error:
            # Some network file systems lock nothing: the one-step swap still keeps the folder
            # whole, and only writers of one path from several machines could then collide.
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
                raise
        yield
    finally:
        os.close(handle)  # releases the lock


def _leftovers(target: str, kind: str) -> list[tuple[str, str]]:
    """`(path, writer id)` of the `.<name>.<kind>-<id>` entries beside `target`."""
    parent, name = os.path.split(target)
    prefix = f".{name}.{kind}-"
    try:
        entries = sorted(os.listdir(parent))
    except FileNotFoundError:
        return []
    return [(os.path.join(parent, e), e[len(prefix) :]) for e in entries if e.startswith(prefix)]


def _writer_state(uid: str) -> str:
    """`"alive"`, `"dead"` or `"unknown"` (another host's writer, or a name of another format)."""
    host, _, rest = uid.partition("-")
    pid = rest.partition("-")[0]
    if host != _HOST or not pid.isdigit():
        return "unknown"
    if int(pid) == os.getpid():
        return "alive"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass
    return "alive"


def _recover_locked(target: str) -> None:
    if os.path.lexists(target):
        return
    # Under the lock no live writer is between its renames: what is aside is a dead one's.
    aside = [
        (os.path.getmtime(p), p)
        for p, uid in _leftovers(target, "old")
        if _writer_state(uid) != "alive"
    ]
    if aside:
        os.rename(max(aside)[1], target)


def recover_folder(path: str | os.PathLike) -> None:
    """Puts back a folder that a writer killed between its two renames left aside.

    A write moves the old folder to `.<name>.old-<id>` and then renames the new one into place;
    a process killed between the two leaves nothing at `path` but the complete old folder aside.

    Example:
        >>> recover_folder("runs/ckpt")  # nothing to do when no write was interrupted
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.lexists(target) or not _leftovers(target, "old"):
        return
    with io_errors(target, "recover"), folder_lock(target):
        _recover_locked(target)


def _remove_dead_leftovers(target: str) -> None:
    """Removes the leftovers of killed writers; runs under the lock, after a successful write.

    Temporary folders are filled outside the lock, so only those of processes known dead go;
    old and deleted folders exist only under the lock, so any not of a live process go.
    """
    for kind in _KINDS:
        for leftover, uid in _leftovers(target, kind):
            state = _writer_state(uid)
            if state == "dead" or (kind != "tmp" and state == "unknown"):
                _remove(leftover)


def _find_swap() -> Callable[[bytes, bytes], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if hasattr(libc, "renameat2"):  # (AT_FDCWD, old, AT_FDCWD, new, RENAME_EXCHANGE)
        return lambda a, b: int(libc.renameat2(-100, a, -100, b, 2))
    if hasattr(libc, "renamex_np"):  # (old, new, RENAME_SWAP)
        return lambda a, b: int(libc.renamex_np(a, b, 2))
    return None


_SWAP = _find_swap()


def _exchange(first: str, second: str) -> bool:
    """Swaps two paths in one step where the system can (Linux `renameat2(RENAME_EXCHANGE)`,
    macOS `renamex_np(RENAME_SWAP)`), so that even a reader without the lock never finds the
    destination missing; returns False where it cannot, and the caller renames twice."""
    return _SWAP is not None and _SWAP(os.fsencode(first), os.fsencode(second)) == 0


def atomic_write_folder(
    path: str | os.PathLike,
    write: Callable[[str], None],
    *,
    check: Callable[[str], None] | None = None,
    argument: str = "path",
    suffix: str = "",
) -> str:
    """Calls `write(tmp)` to fill a temporary folder, then renames it onto `path`, replacing it.

    At every instant `path` holds the old or the new folder whole: the two are swapped in one
    step where the system supports it, or else renamed twice under the lock (after a crash
    between those renames the old folder is aside, and `recover_folder` puts it back).
    `check(target)`, when given, runs again under the lock just before the old folder is
    replaced: a caller's rule about what may be replaced (see
    `mlxkit.checkpoint.check_checkpoint_target`).

    Args:
        path: The destination folder (refused when `check_folder_target` refuses it).
        write: Writes the folder's files into the folder it is given.
        check: Raises if what is at the target must not be replaced.
        argument: The caller's name for `path`, used in error messages.
        suffix: The temporary folder's ending, for writers that insist on one (`.mlpackage`).

    Returns:
        `path`, absolute.

    Example:
        >>> def write(folder):
        ...     with open(os.path.join(folder, "a.txt"), "w") as f:
        ...         f.write("a")
        >>> path = atomic_write_folder("runs/out", write)
        >>> os.listdir(path)
        ['a.txt']
    """
    target = check_folder_target(path, argument)
    uid = writer_id()
    tmp = _temporary(target, "tmp", uid, suffix)
    old, doomed = _temporary(target, "old", uid), _temporary(target, "del", uid)
    with io_errors(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.mkdir(tmp)
        try:
            write(tmp)
            for name in os.listdir(tmp):
                _fsync(os.path.join(tmp, name))
            _fsync(tmp, folder=True)
            with folder_lock(target):
                _recover_locked(target)
                if check is not None:
                    check(target)
                if not os.path.lexists(target):
                    os.rename(tmp, target)
                elif _exchange(tmp, target):
                    os.rename(tmp, doomed)  # the old folder, now at the temporary name
                else:
                    os.rename(target, old)
                    try:
                        os.rename(tmp, target)
                    except BaseException:
                        os.rename(old, target)
                        raise
                    # Renamed before it is deleted, so that a crash mid-delete leaves nothing
                    # `recover_folder` would take for a whole folder.
                    os.rename(old, doomed)
                _fsync(os.path.dirname(target), folder=True)
                _remove_dead_leftovers(target)
        except BaseException:
            _remove(tmp)
            raise
        _remove(doomed)  # outside the lock: other writers need not wait for the deletion
    return target


def remove_folder(path: str | os.PathLike) -> None:
    """Deletes the folder (or file) `path` under its lock; readers see it whole or not at all.

    Example:
        >>> remove_folder("runs/backup")
    """
    target = os.path.abspath(os.fspath(path))
    if not os.path.lexists(target):
        return
    doomed = _temporary(target, "del", writer_id())
    with io_errors(target, "remove"):
        with folder_lock(target):
            if not os.path.lexists(target):
                return
            os.rename(target, doomed)
        _remove(doomed)
