"""Content-keyed disk cache and atomic file writes.

Finished work (flows, keyframe renders, propagated frames) is stored under a key that hashes
everything the result depends on, so a re-run with the same inputs reuses it and a changed input
never reads a stale entry. Entries are directories that appear only when complete: they are filled
under a temporary name and renamed into place, so an interrupted run leaves nothing half-written.

Location: ``$RERENDER_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/rerender_video``, else
``~/.cache/rerender_video``.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .errors import input_error, write_error

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

CACHE_ENV = "RERENDER_CACHE_DIR"


def cache_root() -> Path:
    """Return the cache directory (created on first use); see the module docstring for the rule."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        root = Path(explicit)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rerender_video"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _feed(hasher: "hashlib._Hash", part: object) -> None:
    if isinstance(part, torch.Tensor):
        part = part.detach().cpu().contiguous().numpy()
    if isinstance(part, np.ndarray):
        hasher.update(f"ndarray{part.dtype}{part.shape}".encode())
        hasher.update(np.ascontiguousarray(part).data)
    elif isinstance(part, (bytes, bytearray)):
        hasher.update(b"bytes")
        hasher.update(part)
    elif isinstance(part, (list, tuple)):
        hasher.update(f"seq{len(part)}".encode())
        for item in part:
            _feed(hasher, item)
    elif isinstance(part, dict) and _holds_data(part):
        hasher.update(f"map{len(part)}".encode())   # by content: JSON would hash tensors by their short text
        for key in sorted(part, key=str):
            _feed(hasher, str(key))
            _feed(hasher, part[key])
    else:
        hasher.update(json.dumps(part, sort_keys=True, default=str).encode())


def _holds_data(part: object) -> bool:
    """True if ``part`` holds a tensor, array or bytes anywhere inside its dicts, lists and tuples."""
    if isinstance(part, (torch.Tensor, np.ndarray, bytes, bytearray)):
        return True
    if isinstance(part, dict):
        return any(_holds_data(value) for value in part.values())
    if isinstance(part, (list, tuple)):
        return any(_holds_data(item) for item in part)
    return False


def content_key(*parts: object) -> str:
    """Hash tensors, arrays, bytes and JSON-able values into a 32-hex-digit key.

    Tensors and arrays are hashed by dtype, shape and full content (BLAKE2b, about 1 GB/s), also inside
    dicts, lists and tuples; other values by their JSON text (sorted keys).

    Example:
        >>> content_key("flow", {"preset": "medium"}, torch.zeros(2, 2)) == content_key(
        ...     "flow", {"preset": "medium"}, torch.zeros(2, 2))
        True
    """
    hasher = hashlib.blake2b(digest_size=16)
    for part in parts:
        _feed(hasher, part)
    return hasher.hexdigest()


def check_free_space(needed: int, what: str, got: str) -> None:
    """Raise before long work when ``needed`` bytes would not fit on the cache disk (90 % of its free space).

    Args:
        needed: bytes the work will store.
        what: what is stored, e.g. ``"flows"``.
        got: the amount in the user's terms, e.g. ``"269 pairs at 360x264"``.

    Raises:
        InputError: naming the sizes and the fixes (free space, ``RERENDER_CACHE_DIR``, fewer or smaller frames).
    """
    free = shutil.disk_usage(cache_root()).free
    if needed > free * 0.9:
        raise input_error("frames", f"{what} that fit on the cache disk ({free / 2**30:.1f} GiB free)",
                          f"{got} needing {needed / 2**30:.1f} GiB",
                          ["free disk space, or set RERENDER_CACHE_DIR to a larger disk",
                           "load fewer frames or a smaller size"])


def entry_dir(namespace: str, key: str) -> Path:
    """Path of a cache entry (it may not exist yet)."""
    return cache_root() / namespace / key


def lookup(namespace: str, key: str) -> Path | None:
    """Return the entry's directory if a complete entry exists, else ``None``."""
    path = entry_dir(namespace, key)
    return path if path.is_dir() else None


@contextlib.contextmanager
def new_entry(namespace: str, key: str) -> Iterator[Path]:
    """Create a cache entry atomically.

    Yields a temporary directory to fill; on normal exit it is renamed to the entry path (replacing
    an existing entry), on an exception it is deleted and nothing is published.
    """
    final = entry_dir(namespace, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _part_affixes(target: Path) -> tuple[str, str]:
    """Prefix and suffix of the temporary files :func:`atomic_path` writes for ``target``."""
    return f".{target.stem}.", f".part{target.suffix}"


def _lock(handle: int) -> bool:
    """Take an exclusive lock on an open file without waiting; ``False`` if another process holds it.

    The lock dies with its process (even on ``kill -9``), so a partial file nobody holds is stale.
    """
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _is_stale(part: Path) -> bool:
    """True if no process is writing ``part`` (POSIX: nobody holds its lock; Windows: it is not open)."""
    if fcntl is None:
        return True  # Windows refuses to delete a file another process has open
    try:
        handle = os.open(part, os.O_RDWR)
    except OSError:
        return False
    try:
        return _lock(handle)
    finally:
        os.close(handle)


def remove_stale_parts(path: str | os.PathLike) -> list[Path]:
    """Delete the partial files that interrupted writes of ``path`` left behind; returns them.

    A partial file still being written (its writer holds a lock on it) is kept, so two runs that
    write the same output do not break each other.
    """
    target = Path(path)
    prefix, suffix = _part_affixes(target)
    removed = []
    for part in target.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        if "." in part.name[len(prefix):-len(suffix)] or not _is_stale(part):
            continue  # another output's partial file (a longer stem), or one being written
        try:
            part.unlink()
        except OSError:
            continue  # in use (Windows) or gone meanwhile
        removed.append(part)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file atomically: yields a temporary path in the same folder, renamed onto ``path``
    when the block ends without an exception and removed otherwise.

    The temporary name (``.<stem>.<random>.part<suffix>``) keeps the suffix, so writers that pick a
    format from it (PyAV, OpenCV) work. The temporary file stays locked while it is written; partial
    files of the same ``path`` that no process holds (left by a killed run) are deleted first.

    Raises:
        OSError: the folder cannot be created or written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target)
    prefix, suffix = _part_affixes(target)
    handle, temp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
    temp = Path(temp_name)
    if fcntl is None:
        os.close(handle)  # Windows: an open handle would block the rename
        handle = None
    else:
        _lock(handle)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp creates the file private (0600); published files are not
        yield temp
        os.replace(temp, target)
    finally:
        if handle is not None:
            os.close(handle)
        if temp.exists():
            temp.unlink()


def check_writable(path: str | os.PathLike, name: str = "output") -> Path:
    """Check, before any work, that a file can be created at ``path``; returns ``Path(path)``.

    Creates and deletes a small probe file in the nearest existing folder of ``path`` (no folder
    is created, nothing is left behind).

    Args:
        path: the file that will be written later.
        name: the input that chose ``path``, for the message.

    Raises:
        InputError: ``path`` is a folder, or a folder on the way is a file.
        OutputError: the folder is read-only, not yours, or the disk is full.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise input_error(name, "a file name", f"{target}, which is a folder",
                          f"add a file name, e.g. {target / 'out.mp4'}")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise input_error(name, "a path whose folders are folders", f"{target} ({folder} is a file)",
                          "choose another output path")
    try:
        handle, probe = tempfile.mkstemp(prefix=".rerender-write-check.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise write_error(name, folder, error) from None
    return target


def clear(namespace: str | None = None) -> int:
    """Delete one namespace of the cache (or all of it); returns the number of entries removed."""
    root = cache_root()
    targets = [root / namespace] if namespace else [p for p in root.iterdir() if p.is_dir()]
    removed = 0
    for folder in targets:
        if folder.is_dir():
            removed += sum(1 for _ in folder.iterdir())
            shutil.rmtree(folder)
    return removed
