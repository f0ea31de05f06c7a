"""`hdn-deploy watch`: files written slowly, in pieces, into nested folders by another
process are denoised only once complete (outputs equal a direct denoise of the final
file), bad files are reported while the rest goes on, SIGTERM and Ctrl-C stop without
partial outputs; plus the FolderWatcher's completeness rules on their own."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from hdn_deploy.atomic import TEMP_PATTERN
from hdn_deploy.cli.main import main
from hdn_deploy.denoiser import Denoiser
from hdn_deploy.watching import FolderWatcher, tiff_incomplete_reason

WRITER = Path(__file__).with_name("slow_writer.py")
FAST = ["--n-samples", "2", "--backend", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def den(tiny_package):
    return Denoiser(tiny_package, backend="cpu", threads=1)


def _writer(folder: Path, specs: list[dict], tmp_path: Path) -> subprocess.Popen:
    spec_file = tmp_path / f"spec_{len(list(tmp_path.glob('spec_*')))}.json"
    spec_file.write_text(json.dumps(specs))
    return subprocess.Popen([sys.executable, str(WRITER), str(folder), str(spec_file)],
                            stdout=subprocess.PIPE, text=True)


def _wait_for(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _assert_denoised(den, inputs: Path, out: Path, rel: str) -> None:
    expected = den.denoise(tifffile.imread(inputs / rel), n_samples=2, seed=0)
    got = tifffile.imread(out / rel.replace(".tif", "_mmse.tif"))
    assert np.array_equal(got, expected.mmse), rel


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP_PATTERN.match(p.name)]


def test_once_waits_for_a_file_being_written(tiny_package, den, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    tifffile.imwrite(inputs / "ready.tif", np.full((40, 48), 100, np.float32))
    # paused longer than --settle between pieces: only the TIFF check can tell it is not done
    writer = _writer(inputs, [{"path": "nested/deep/slow.tif", "kind": "image", "seed": 1,
                               "pieces": 4, "pause": 0.6}], tmp_path)
    _wait_for(lambda: (inputs / "nested/deep/slow.tif").exists(), 30, "the writer's first piece")
    result = CliRunner().invoke(main, ["watch", str(inputs), "-m", str(tiny_package), "-o", str(out),
                                       *FAST, "--quiet", "--once", "--settle", "0.3",
                                       "--interval", "0.05"])
    assert writer.wait(30) == 0
    assert result.exit_code == 0, result.output
    assert "'nested/deep/slow.tif': denoised in" in result.output
    assert "latency" in result.output and "'ready.tif': denoised in" in result.output
    for rel in ("ready.tif", "nested/deep/slow.tif"):
        _assert_denoised(den, inputs, out, rel)
    again = CliRunner().invoke(main, ["watch", str(inputs), "-m", str(tiny_package), "-o", str(out),
                                      *FAST, "--quiet", "--once", "--settle", "0"])
    assert again.exit_code == 0 and again.output.count("already complete, skipped") == 2


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_watch_left_running():
    """A failed test must not leave its watch process running (it would load the machine)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _start_watch(tiny_package, inputs: Path, out: Path, tmp_path: Path, *extra: str):
    log_out, log_err = (tmp_path / "watch.out").open("w"), (tmp_path / "watch.err").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "hdn_deploy", "watch", str(inputs), "-m",
                             str(tiny_package), "-o", str(out), *FAST, "--settle", "0.3",
                             "--interval", "0.05", *extra], stdout=log_out, stderr=log_err)
    _STARTED.append(proc)
    err = tmp_path / "watch.err"
    _wait_for(lambda: "watching" in err.read_text(), 120, "watch to start")
    return proc


def test_watch_follows_slow_writers_survives_bad_files_and_stops_on_sigterm(
        tiny_package, den, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    proc = _start_watch(tiny_package, inputs, out, tmp_path, "--give-up", "1.5", "--quiet")
    specs = [{"path": "bad.tif", "kind": "garbage", "pieces": 2, "pause": 0.2},
             {"path": "a/range.tif", "kind": "out_of_range", "pieces": 2, "pause": 0.2},
             {"path": "a/one.tif", "kind": "image", "seed": 1, "pieces": 3, "pause": 0.5},
             {"path": "a/b/two.tif", "kind": "image", "seed": 2, "pieces": 5, "pause": 0.4},
             {"path": "c/three.tif", "kind": "image", "seed": 3, "shape": [80, 72], "pieces": 2,
              "pause": 0.7}]
    writer = _writer(inputs, specs, tmp_path)
    good = ["a/one.tif", "a/b/two.tif", "c/three.tif"]
    assert writer.wait(60) == 0
    stdout = tmp_path / "watch.out"
    _wait_for(lambda: all(f"'{g}': denoised" in stdout.read_text() for g in good), 120,
              "the three good files")
    _wait_for(lambda: "bad.tif" in (tmp_path / "watch.err").read_text(), 30, "the garbage error")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 2  # two inputs failed
    text, err = stdout.read_text(), (tmp_path / "watch.err").read_text()
    assert "stopped (SIGTERM)" in err
    assert "bad.tif': unchanged for" in err and "not a readable TIFF" in err
    assert "range.tif" in err and "outside the intensity range" in err
    assert len([line for line in text.splitlines() if "latency" in line]) == 3
    for rel in good:
        _assert_denoised(den, inputs, out, rel)
    assert not (out / "bad_mmse.tif").exists() and not (out / "a/range_mmse.tif").exists()
    assert not _temps(out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*_mmse.tif")) == sorted(
        g.replace(".tif", "_mmse.tif") for g in good)


@pytest.mark.parametrize("sig, name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_a_stop_mid_file_leaves_no_output(tiny_package, tmp_path, sig, name):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    proc = _start_watch(tiny_package, inputs, out, tmp_path, "--n-samples", "100000")
    tifffile.imwrite(inputs / "long.tif", np.full((64, 64), 100, np.float32))
    err = tmp_path / "watch.err"
    _wait_for(lambda: "long.tif:" in err.read_text(), 60, "denoising to start (progress bar)")
    proc.send_signal(sig)
    assert proc.wait(90) == 2  # generous: CI machines are shared
    text = err.read_text()
    assert f"stopped ({name})" in text and "interrupted while being denoised" in text
    assert not list(out.rglob("*.tif")) and not _temps(out)


def test_tiff_incomplete_reason(tmp_path):
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, np.zeros((32, 32), np.uint16))
    data = path.read_bytes()
    assert tiff_incomplete_reason(path) is None
    path.write_bytes(data[: len(data) // 2])
    assert "data ends at byte" in tiff_incomplete_reason(path)
    path.write_bytes(data[:4])
    assert "not a readable TIFF" in tiff_incomplete_reason(path)


def test_folder_watcher_rules(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "in" / "out"
    (inputs / "sub").mkdir(parents=True)
    out.mkdir()
    image = np.zeros((8, 8), np.uint16)
    for rel in ("sub/a.tif", ".hidden.tif", "sub/.x.tif.0123456789ab.tmp", "out/a_mmse.tif",
                "notes.txt", "b.TIFF"):
        tifffile.imwrite(inputs / rel, image) if rel.lower().endswith((".tif", ".tiff")) else (
            inputs / rel).write_text("x")
    with FolderWatcher(inputs, exclude=out, settle=0.0, follow=False) as watcher:
        first = [a.path.relative_to(inputs).as_posix() for a in watcher.poll()]
        assert sorted(first) == ["b.TIFF", "sub/a.tif"] and watcher.n_pending == 0
        assert list(watcher.poll()) == []  # handed over once


def _handed_over(watcher: FolderWatcher, n: int) -> dict:
    got: dict = {}
    _wait_for(lambda: got.update({a.path.name: a for a in watcher.poll()}) or len(got) >= n,
              10, f"{n} file(s) handed over")
    return got


def test_folder_watcher_follows_new_files_and_rewrites(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    with FolderWatcher(inputs, settle=0.2, give_up=0.5, poll_interval=0.05) as watcher:
        assert watcher.n_pending == 0
        (inputs / "deep" / "er").mkdir(parents=True)
        tifffile.imwrite(inputs / "deep/er/a.tif", np.zeros((8, 8), np.uint16))
        (inputs / "broken.tif").write_bytes(b"II*\0garbage")
        _wait_for(lambda: watcher.n_pending == 2, 10, "events for the two new files")
        got = _handed_over(watcher, 2)
        assert got["a.tif"].error is None and got["a.tif"].arrived <= time.monotonic()
        assert "broken.tif" in got["broken.tif"].error
        assert "retried if it changes" in got["broken.tif"].error
        assert watcher.n_pending == 0
        time.sleep(0.05)  # a different mtime
        tifffile.imwrite(inputs / "deep/er/a.tif", np.ones((8, 8), np.uint16))  # rewritten
        again = _handed_over(watcher, 1)
        assert list(again) == ["a.tif"] and again["a.tif"].error is None
