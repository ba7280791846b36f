"""Crash-safe checkpoints: write to a temp file in the same directory, fsync, `os.replace`.

`os.replace` is atomic on POSIX and Windows when source and destination are on the same file
system, so a reader (or a resumed run after a crash or Ctrl-C mid-write) sees either the old
complete file or the new complete file, never a truncated one.
"""

from __future__ import annotations

import glob
import os
import pickle
import re
import secrets
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import torch

from taichi_sdf.core.errors import BadInput

__all__ = [
    "CheckpointError",
    "atomic_write",
    "atomic_write_bytes",
    "open_temp_beside",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "remove_stale_temp_files",
]


class CheckpointError(BadInput, RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, corrupt, or not a torch file)."""


def _fsync_dir(directory: str) -> None:
    # Persist the rename itself; not possible on Windows, harmless to skip there.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_temp_beside(path: str | os.PathLike, suffix: str = ".tmp") -> tuple[int, str]:
    """Create a new hidden temp file next to `path` (same file system, so renaming it over `path` is
    atomic; not matched by the usual "*.pt" globs): (descriptor open for writing, its path).

    Its permissions follow the umask like any file the user creates (0o666 & ~umask, typically 0644),
    not `tempfile.mkstemp`'s 0600, which the rename would carry over to the final file."""
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    prefix = "." + os.path.basename(os.fspath(path)) + "."
    for _ in range(100):
        tmp = os.path.join(directory, prefix + secrets.token_hex(4) + suffix)
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{directory}: no free temp file name for {path}")  # pragma: no cover


def _atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], None]) -> str:
    """Call `writer(file)` on a temp file next to `path`, fsync, then rename over `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = open_temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # includes KeyboardInterrupt: never leave the temp file behind
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    return path


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], None]) -> str:
    """The project's one atomic file writer: `writer(f)` writes into an open binary temp file next to
    `path`; the file is flushed, fsynced and closed, then renamed over `path` (the folder is fsynced
    too). On any failure (exceptions, Ctrl-C) the temp file is removed and the previous file at
    `path` is left untouched. Creates the parent directory if needed. Returns the path as str."""
    return _atomic_write(path, writer)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write `data` to `path` atomically (temp file in the same directory + `os.replace`).

    Creates the parent directory if needed. Returns the path as str.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected bytes, got {type(data).__name__}")
    return _atomic_write(path, lambda f: f.write(data))


def save_checkpoint(path: str | os.PathLike, state: Any) -> str:
    """Save `state` (a state dict or any `torch.save`-able object) to `path` atomically.

    A crash, exception or Ctrl-C during the write leaves the previous file at `path` untouched.
    Returns the path as str.
    """
    # Look up torch.save at call time (not bound at import) so it stays patchable in tests.
    return _atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device | None = "cpu",
    weights_only: bool = True,
) -> Any:
    """Load a checkpoint written by `save_checkpoint` (or any `torch.save` file).

    Args:
        path: the file.
        map_location: passed to `torch.load` (default "cpu", so GPU checkpoints load anywhere).
        weights_only: passed to `torch.load`. True (safe) allows tensors, numbers, strings and
            containers of them; use False only for trusted files holding other Python objects.

    Raises:
        FileNotFoundError: `path` does not exist (the message names it).
        CheckpointError: the file is truncated, corrupt, or holds objects `weights_only` refuses;
            the message names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        if weights_only and "weights only" in str(exc).lower():
            # torch's message is long and has ANSI codes; keep only the offending global's line.
            detail = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported global" in ln), "")
            raise CheckpointError(
                f"checkpoint {path!r} holds objects that weights_only=True refuses to load; "
                f"pass weights_only=False only if you trust the file. {detail}".rstrip()
            ) from exc
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not a torch checkpoint: {exc}") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, ImportError) as exc:
        raise CheckpointError(
            f"checkpoint {path!r} is corrupt, truncated or not a torch checkpoint: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


_NUM = re.compile(r"(\d+)")


def latest_checkpoint(directory: str | os.PathLike, pattern: str = "*.pt") -> str | None:
    """Return the newest checkpoint in `directory` matching `pattern`, or None if there is none.

    Ordering: files whose name contains a number (e.g. `ckpt_000100.pt`) are ordered by the last
    number in the name (the step), and beat files without one; ties and unnumbered files are
    ordered by modification time. Hidden temp files from interrupted writes are ignored.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return None
    candidates = [
        p
        for p in glob.glob(os.path.join(glob.escape(directory), pattern))
        if os.path.isfile(p) and not os.path.basename(p).startswith(".")
    ]
    if not candidates:
        return None

    def key(p: str) -> tuple[int, int, int]:
        nums = _NUM.findall(os.path.splitext(os.path.basename(p))[0])
        numbered = 1 if nums else 0
        return (numbered, int(nums[-1]) if nums else 0, os.stat(p).st_mtime_ns)

    return max(candidates, key=key)


def remove_stale_temp_files(directory: str | os.PathLike) -> list[str]:
    """Delete the hidden temp files (`.<name>.<random>.tmp`) that `_atomic_write` leaves in `directory`
    when its process is killed mid-write (SIGKILL, power loss). Call it only while no other process
    writes there (a trainer does it under its run lock). Returns the removed paths."""
    directory = os.fspath(directory)
    removed = []
    for p in glob.glob(os.path.join(glob.escape(directory), ".*.tmp")):
        if os.path.isfile(p):
            try:
                os.unlink(p)
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed
