"""`hdn-deploy watch`: denoise each TIFF that appears below a folder, once it is complete.

Files come from :class:`hdn_deploy.watching.FolderWatcher` (never read half-way) and go
through the ``denoise`` command's per-file machinery (:func:`denoise_input`: same
outputs, mirrored sub-folders, skip rules, atomic grouped writes). Ctrl-C or SIGTERM
stops at once: a file being denoised gets no output (outputs are atomic), and is named.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click

from ..errors import DiskSpaceError, HDNError
from .denoise import _start, _summary, _Tally, denoise_input, denoise_options, open_run
from .main import handle_errors, main


class _Stop(BaseException):
    """Raised in the main thread by the SIGTERM handler (like KeyboardInterrupt)."""


def _raise_stop(signum, frame) -> None:
    raise _Stop(signal.Signals(signum).name)


def _is_own_output(path: Path) -> bool:
    from ..io import split_own_outputs

    return not split_own_outputs([path])[0]


def _process(arrival, run, in_dir: Path) -> None:
    """One handed-over file: denoise it (or report why not) and print its latency line."""
    rel = arrival.path.relative_to(in_dir).as_posix()
    tally = run.tally
    if arrival.error is not None:
        tally.fail(arrival.error)
        return
    if _is_own_output(arrival.path):
        tally.note(f"'{rel}': not an input, an output of hdn-deploy (ignored)")
        return
    before = (tally.written, tally.skipped, len(tally.failed))
    start = time.monotonic()
    try:
        denoise_input(arrival.path, run)
    except DiskSpaceError as exc:  # the disk may be freed: report and keep watching
        tally.fail(exc)
    except HDNError as exc:
        tally.fail(exc)
    except OSError as exc:  # e.g. removed or locked by the writer between the checks
        tally.fail(f"'{arrival.path}': could not be read: {exc}")
    end = time.monotonic()
    if tally.written > before[0] and len(tally.failed) == before[2]:
        click.echo(f"'{rel}': denoised in {end - start:.2f} s; latency {end - arrival.arrived:.2f} s "
                   "(arrival -> outputs written)")
    elif tally.skipped > before[1] and tally.written == before[0]:
        click.echo(f"'{rel}': already complete, skipped")


@main.command()
@click.argument("in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@denoise_options
@click.option("--once", is_flag=True, help="Denoise the files there now (waiting for those "
              "still being written), then exit: for cron jobs and CI.")
@click.option("--polling", is_flag=True, help="Poll the folder instead of using OS file events "
              "(network shares: SMB, NFS), with watchdog's PollingObserver.")
@click.option("--settle", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds a file's size and time must stay unchanged before it is read.")
@click.option("--give-up", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds an unchanged file may stay unreadable before it is reported as "
              "failed (it is retried if it changes).")
@click.option("--interval", type=click.FloatRange(min=0.01), default=0.25, show_default=True,
              help="Seconds between checks of the files not yet complete.")
@handle_errors
def watch(in_dir, model, out_dir, quiet, overwrite, backend, threads, batch_size, once, polling,
          settle, give_up, interval, **opts):
    """Denoise every TIFF below IN_DIR (and each new one) into the output folder.

    A file is read only once complete: unchanged for --settle seconds and a TIFF whose
    data all lie inside the file. Sub-folders are mirrored, files already denoised with
    the same settings are skipped, a bad file is reported and the rest goes on. One line
    per file gives its latency (first seen -> outputs written). Ctrl-C or SIGTERM stops;
    a file interrupted mid-way gets no output. Exits 2 if any file failed or was left.
    """
    from ..watching import FolderWatcher

    in_dir = in_dir.resolve()
    tally = _Tally()
    run = open_run(model, out_dir, in_dir, set(), opts, backend=backend, threads=threads,
                   batch_size=batch_size, overwrite=overwrite, quiet=quiet, tally=tally)
    _start(out_dir, [], tally)
    watcher = FolderWatcher(in_dir, exclude=out_dir, polling=polling, settle=settle,
                            give_up=give_up, follow=not once, poll_interval=interval)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    current = None
    try:
        with watcher:
            if not once:
                click.echo(f"watching '{in_dir}' (Ctrl-C to stop)", err=True)
            while not once or watcher.n_pending:
                for current in watcher.poll():
                    _process(current, run, in_dir)
                    current = None
                time.sleep(interval)
    except (KeyboardInterrupt, _Stop) as exc:
        _interrupted(exc, current, watcher, tally)
    finally:
        signal.signal(signal.SIGTERM, previous)
    _summary(tally, out_dir)


def _interrupted(exc: BaseException, current, watcher, tally: _Tally) -> None:
    name = str(exc) or "Ctrl-C"
    click.echo(f"stopped ({name})", err=True)
    if current is not None:
        tally.fail(f"'{current.path}': interrupted while being denoised; no output was "
                   "written for it (run watch again to process it)")
    left = watcher.n_pending
    if left:
        tally.fail(f"{left} file(s) were still being written or settling and were not denoised")
    sys.stdout.flush()
