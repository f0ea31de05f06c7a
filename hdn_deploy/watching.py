"""Follow a folder tree and hand over each TIFF once it is completely written.

Acquisition software writes files while the experiment runs; a file still being written
must never be read half-way. :class:`FolderWatcher` learns about files from the
``watchdog`` library (OS events, or its ``PollingObserver`` for network shares, where
events are not delivered) and from an initial scan, and declares a file *ready* only when

1. its size and modification time have not changed for ``settle`` seconds, and
2. it is a readable TIFF whose every page's data lies inside the file
   (:func:`tiff_incomplete_reason`), which catches a writer that pauses mid-file.

A file that stays unchanged but unreadable for ``give_up`` seconds is reported as failed
(with the reason); it is retried if it changes again. A file is handed over again only
when its size or modification time changes after it was handed over (a rewrite).
Hidden files (a leading ``.``: temporaries of hdn-deploy and of most writers) and files
below ``exclude`` (the output folder) are ignored.
"""
from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import tifffile

__all__ = ["Arrival", "FolderWatcher", "TIFF_SUFFIXES", "tiff_incomplete_reason"]

TIFF_SUFFIXES = (".tif", ".tiff")


def tiff_incomplete_reason(path: Path) -> str | None:
    """None when ``path`` is a TIFF whose pages all lie inside the file; otherwise why
    not (e.g. ``"page 0 data ends at byte 8400, the file has 4096"``). Never raises for
    unreadable content; OSError (a vanished file) propagates."""
    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) == 0:
                return "a TIFF header without any image page"
            for page in tif.pages:
                end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
                if end > size:
                    return f"page {page.index} data ends at byte {end}, the file has {size}"
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse error means "not (yet) a TIFF"
        return f"not a readable TIFF ({type(exc).__name__}: {exc})"
    return None


@dataclass(frozen=True)
class Arrival:
    """A file handed over by :meth:`FolderWatcher.poll`.

    ``arrived``: ``time.monotonic()`` when the watcher first saw this version of the file;
    ``error``: None when the file is complete, else why it was given up on.
    """

    path: Path
    arrived: float
    error: str | None = None


@dataclass
class _Pending:
    arrived: float
    signature: tuple[int, int] | None = None
    changed: float = 0.0


class FolderWatcher:
    """Ready TIFFs below ``folder``, recursively (see the module docstring).

    Parameters
    ----------
    folder
        Folder to follow (must exist).
    exclude
        A folder whose files are never handed over (the output folder), or None.
    polling
        Use watchdog's PollingObserver (network shares) instead of OS events.
    settle, give_up
        Seconds a file must stay unchanged before it is checked / declared failed.
    follow
        False: only the files present when :meth:`start` runs (``--once``).

    Use as a context manager; call :meth:`poll` repeatedly; :attr:`n_pending` says how
    many known files are not handed over yet.
    """

    def __init__(self, folder: Path, *, exclude: Path | None = None, polling: bool = False,
                 settle: float = 1.0, give_up: float = 60.0, follow: bool = True,
                 poll_interval: float = 1.0) -> None:
        self.folder = Path(folder).resolve()
        self.exclude = None if exclude is None else Path(exclude).resolve()
        self.polling, self.follow = polling, follow
        self.settle, self.give_up, self.poll_interval = settle, give_up, poll_interval
        self._events: queue.SimpleQueue[tuple[Path, float]] = queue.SimpleQueue()
        self._pending: dict[Path, _Pending] = {}
        self._done: dict[Path, tuple[int, int]] = {}
        self._observer = None

    @property
    def n_pending(self) -> int:
        """Known files not handed over yet (being written, or waiting to settle)."""
        self._drain()
        return len(self._pending)

    def start(self) -> "FolderWatcher":
        """Start following (when ``follow``), then scan the files already there."""
        if self.follow:
            self._observer = self._make_observer()
            self._observer.start()
        now = time.monotonic()
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                self._note(Path(root) / name, now)
        return self

    def stop(self) -> None:
        """Stop following (idempotent)."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def __enter__(self) -> "FolderWatcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def poll(self, now: float | None = None) -> Iterator[Arrival]:
        """Hand over every file that is ready (or given up on) now, oldest arrival first."""
        self._drain()
        now = time.monotonic() if now is None else now
        for path in sorted(self._pending, key=lambda p: self._pending[p].arrived):
            arrival = self._check(path, self._pending[path], now)
            if arrival is not None:
                yield arrival

    # ------------------------------------------------------------------ helpers
    def _make_observer(self):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        events = self._events

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.is_directory:
                    return
                for name in (getattr(event, "dest_path", None), event.src_path):
                    if name:
                        events.put((Path(os.fsdecode(name)), time.monotonic()))

        observer = (PollingObserver(timeout=self.poll_interval) if self.polling
                    else Observer(timeout=self.poll_interval))
        observer.schedule(_Handler(), str(self.folder), recursive=True)
        return observer

    def _drain(self) -> None:
        while True:
            try:
                path, when = self._events.get_nowait()
            except queue.Empty:
                return
            self._note(path, when)

    def _wanted(self, path: Path) -> bool:
        if not path.name.lower().endswith(TIFF_SUFFIXES) or path.name.startswith("."):
            return False
        rel = path.relative_to(self.folder) if path.is_relative_to(self.folder) else None
        if rel is None or any(part.startswith(".") for part in rel.parts):
            return False
        return self.exclude is None or not path.is_relative_to(self.exclude)

    def _note(self, path: Path, when: float) -> None:
        path = path if path.is_absolute() else self.folder / path
        if path in self._pending or not self._wanted(path):
            return
        signature = _signature(path)
        if signature is None or self._done.get(path) == signature:
            return
        self._pending[path] = _Pending(arrived=when)

    def _check(self, path: Path, entry: _Pending, now: float) -> Arrival | None:
        signature = _signature(path)
        if signature is None:  # deleted or renamed away
            del self._pending[path]
            return None
        if signature != entry.signature:
            # unchanged since its mtime (wall clock) counts toward settling; a clock ahead
            # of ours (network share) counts as just changed
            age = time.time() - signature[1] / 1e9 if entry.signature is None else 0.0
            entry.signature, entry.changed = signature, now - max(0.0, min(age, self.settle))
            if now - entry.changed < self.settle:
                return None
        if now - entry.changed < self.settle:
            return None
        try:
            reason = tiff_incomplete_reason(path)
        except OSError:
            return None  # vanished between the checks: the next poll drops it
        if reason is not None and now - entry.changed < self.give_up:
            return None
        del self._pending[path]
        self._done[path] = signature
        if reason is not None:
            reason = (f"'{path}': unchanged for {now - entry.changed:.0f} s but still "
                      f"incomplete or unreadable: {reason}; it is retried if it changes")
        return Arrival(path, entry.arrived, reason)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
