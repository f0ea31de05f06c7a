"""Denoiser.stream: results equal denoising the stack, bounded queue with back-pressure
(the source is never more than max_queue + 2 frames ahead), dropping when asked,
errors of the source and of bad frames re-raised in the caller, latency recorded."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tifffile

from hdn_deploy.denoiser import Denoiser
from hdn_deploy.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def den(tiny_package):
    return Denoiser(tiny_package, backend="cpu", threads=1)


@pytest.fixture(scope="module")
def frames(data_dir):
    image = tifffile.imread(data_dir / "noisy.tif")
    return [image[i * 8: i * 8 + 32, :40].copy() for i in range(8)]


def test_stream_equals_denoising_the_stack(den, frames):
    out = list(den.stream(iter(frames[:4]), n_samples=2, seed=7))
    stack = den.denoise(np.stack(frames[:4]), n_samples=2, seed=7)
    assert [r.index for r in out] == [0, 1, 2, 3]
    for r in out:
        assert np.array_equal(r.result.mmse, stack.mmse[r.index])
        assert np.array_equal(r.result.std, stack.std[r.index])
        assert r.result.metadata["frame_index"] == r.index and r.result.metadata["stream_seed"] == 7
        assert r.done >= r.arrived and r.latency_s == r.done - r.arrived and r.dropped == 0


def test_back_pressure_bounds_how_far_the_source_runs_ahead(den, frames):
    pulled = []

    def source():
        for i, frame in enumerate(frames):
            pulled.append(i)
            yield frame

    ahead = []
    for r in den.stream(source(), n_samples=1, max_queue=2):
        time.sleep(0.3)  # a slow consumer (display, disk)
        ahead.append(len(pulled) - (r.index + 1))
    # taken out: index + 1; waiting in the queue: <= 2; held by the blocked puller: 1
    assert max(ahead) == 3 and min(ahead) >= 0
    assert len(pulled) == len(frames)


def test_drop_when_full_keeps_up_with_a_fast_source(den, frames):
    def camera():
        for frame in frames * 3:
            time.sleep(0.001)
            yield frame

    out = list(den.stream(camera(), n_samples=1, max_queue=1, when_full="drop"))
    indices = [r.index for r in out]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert out[-1].dropped > 0 and len(out) + out[-1].dropped == len(frames) * 3


def test_source_errors_and_bad_frames_reach_the_caller(den, frames):
    def broken():
        yield frames[0]
        raise RuntimeError("camera disconnected")

    stream = den.stream(broken(), n_samples=1)
    assert next(stream).index == 0
    with pytest.raises(RuntimeError, match="camera disconnected"):
        next(stream)
    with pytest.raises(InputError, match="frame 1 has shape"):
        list(den.stream([frames[0], np.stack(frames[:2])], n_samples=1))
    with pytest.raises(ConfigError, match="max_queue"):
        list(den.stream(frames, max_queue=0))
    with pytest.raises(ConfigError, match="when_full"):
        list(den.stream(frames, when_full="later"))


def test_closing_the_stream_stops_the_puller(den, frames):
    def endless():
        while True:
            yield frames[0]

    before = threading.active_count()
    stream = den.stream(endless(), n_samples=1, max_queue=1)
    next(stream)
    stream.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
