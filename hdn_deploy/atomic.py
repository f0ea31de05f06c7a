"""Atomic file and folder writes: the one implementation every writer in hdn-deploy uses.

A target ``path`` is never seen half-written: data go to a hidden temporary name in the
same folder (``.<name>.<random>.tmp``, so the final rename stays on one file system),
are flushed to disk (``fsync``), and then replace ``path`` with :func:`os.replace`.
A failure (an exception, a full disk) removes the temporary and leaves an existing
``path`` untouched. A process killed with SIGKILL cannot clean up; the next writer
removes such stale temporaries with :func:`remove_stale_temps`.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["TEMP_PATTERN", "create_temp_beside", "atomic_path", "atomic_paths", "atomic_write_bytes",
           "atomic_write_text", "staged_folder", "remove_stale_temps"]

#: Names of our temporaries: ``.<target name>.<12 hex digits>.tmp``.
TEMP_PATTERN = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def create_temp_beside(path: str | Path, *, directory: bool = False) -> Path:
    """Create an empty hidden ``.<name>.<random>.tmp`` file (or folder) beside ``path``.

    Unlike :func:`tempfile.mkstemp` (mode 0600) and :func:`tempfile.mkdtemp` (0700), it
    is created with mode 0666 (0777 for a folder) less the process umask, so once it is
    renamed to ``path`` it has the permissions of a normally created file.

    Raises
    ------
    OSError
        If the folder cannot be written.
    """
    path = Path(path)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            if directory:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"cannot create a temporary name beside '{path}'")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it inside the block.

    On success the temporary is fsynced and renamed to ``path``; on any exception it is
    removed and ``path`` is left as it was. The folder is created if missing.

    Example
    -------
    >>> with atomic_path("out/result.tif") as tmp:      # doctest: +SKIP
    ...     tifffile.imwrite(tmp, image)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp_beside(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_paths(paths: "list[str | Path]") -> Iterator[list[Path]]:
    """Like :func:`atomic_path` for several files that must appear together or not at all.

    Yields one temporary per path; when the block succeeds all are fsynced and then
    renamed. If the block raises, every temporary is removed and no target changes; if
    a rename fails, the targets already renamed are removed too (so none of the group
    is left), then the error propagates.
    """
    paths = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            temps.append(create_temp_beside(path))
        yield temps
        for tmp in temps:
            _fsync(tmp)
    except BaseException:
        for tmp in temps:
            _remove(tmp)
        raise
    done: list[Path] = []
    try:
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
            done.append(path)
    except BaseException:
        for path in done:
            _remove(path)
        for tmp in temps:
            _remove(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


@contextmanager
def staged_folder(output: str | Path) -> Iterator[Path]:
    """Build a folder atomically: yield a hidden staging folder beside ``output``; when the
    block succeeds it replaces ``output``, when it raises it is removed and ``output`` is
    left as it was."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = create_temp_beside(output, directory=True)
    try:
        yield staging
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def remove_stale_temps(folder: str | Path, *, older_than_s: float = 60.0,
                       recursive: bool = False) -> list[Path]:
    """Remove our own temporaries (:data:`TEMP_PATTERN`) left in ``folder`` by a killed run.

    Only names of our pattern that were last modified more than ``older_than_s`` seconds
    ago are removed, so a concurrent writer's live temporary survives. Returns the paths
    removed; a folder that does not exist yields an empty list.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    removed = []
    for path in found:
        if not TEMP_PATTERN.match(path.name):
            continue
        try:
            if now - path.lstat().st_mtime < older_than_s:
                continue
        except FileNotFoundError:
            continue
        _remove(path)
        removed.append(path)
    return removed
