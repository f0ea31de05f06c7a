"""Denoise a stream of frames (a camera loop) with a bounded queue and back-pressure.

:func:`stream_frames` (used as :meth:`hdn_deploy.Denoiser.stream`) pulls frames from any
iterable in a background thread into a queue of at most ``max_queue`` frames and denoises
them, in order, in the caller's thread as the caller iterates over the results. When the
queue is full the puller either waits (``when_full="block"``: the source is not advanced,
so memory stays bounded and the camera's own buffer absorbs the burst) or drops the frame
(``"drop"``: the live view keeps up; dropped frames are counted). Frame ``i`` is denoised
with the seed of slice ``i`` of a stack (:func:`hdn_deploy.denoiser._slice_seed`), so
streaming frames gives exactly what denoising their stack gives.
"""
from __future__ import annotations

import enum
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from .errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from .denoiser import DenoiseResult, Denoiser

__all__ = ["StreamResult", "WhenFull", "stream_frames"]


class WhenFull(str, enum.Enum):
    """What the frame puller does when the queue is full."""

    BLOCK = "block"
    DROP = "drop"


@dataclass(frozen=True)
class StreamResult:
    """One denoised frame.

    Attributes
    ----------
    index : int
        Position of the frame in the input iterable (0-based, dropped frames counted).
    result : DenoiseResult
        MMSE, std (float32, the frame's shape) and metadata.
    arrived, done : float
        ``time.monotonic()`` when the frame was taken from the iterable and when its
        result was ready.
    queued : int
        Frames waiting in the queue when this one was done.
    dropped : int
        Frames dropped so far (``when_full="drop"`` only).
    """

    index: int
    result: "DenoiseResult"
    arrived: float
    done: float
    queued: int
    dropped: int

    @property
    def latency_s(self) -> float:
        """Seconds from arrival to result (queueing included)."""
        return self.done - self.arrived


_END = object()


class _Puller(threading.Thread):
    """Moves frames from the iterable into the queue; records errors for the consumer."""

    def __init__(self, frames: Iterable[Any], max_queue: int, when_full: WhenFull) -> None:
        super().__init__(name="hdn-deploy-frame-puller", daemon=True)
        self.frames, self.when_full = frames, when_full
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.stop_event = threading.Event()
        self.dropped = 0

    def run(self) -> None:
        try:
            for index, frame in enumerate(self.frames):
                if not self._put((index, frame, time.monotonic())):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            self._put(exc, force=True)
            return
        self._put(_END, force=True)

    def _put(self, item: Any, *, force: bool = False) -> bool:
        if self.when_full is WhenFull.DROP and not force:
            try:
                self.queue.put_nowait(item)
            except queue.Full:
                self.dropped += 1
            return not self.stop_event.is_set()
        while not self.stop_event.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def stream_frames(denoiser: "Denoiser", frames: Iterable[Any], *, max_queue: int = 2,
                  when_full: WhenFull | str = WhenFull.BLOCK, seed: int = 0,
                  **options) -> Iterator[StreamResult]:
    """Denoise 2D frames as they come; see the module docstring.

    Parameters
    ----------
    frames
        Iterable of 2D arrays ``(Y, X)``, any real dtype (e.g. uint16 camera frames).
    max_queue
        Frames that may wait (>= 1); memory is bounded by ``max_queue + 2`` frames.
    when_full
        ``"block"`` (default) or ``"drop"``.
    seed, **options
        As :meth:`hdn_deploy.Denoiser.iter_denoise` (``n_samples``, ``tolerance`` ...).

    Raises
    ------
    InputError
        A frame that is not 2D (naming its index) or not a valid image.
    ConfigError
        ``max_queue`` < 1 or an unknown ``when_full``.
    Exception
        Whatever the ``frames`` iterable raised, re-raised in the caller's thread.
    """
    from .denoiser import _slice_seed

    if int(max_queue) < 1:
        raise ConfigError(f"max_queue must be >= 1, got {max_queue}")
    try:
        mode = WhenFull(when_full)
    except ValueError:
        raise ConfigError(f"unknown when_full {when_full!r}; expected 'block' or 'drop'") from None
    puller = _Puller(frames, int(max_queue), mode)
    puller.start()
    try:
        while True:
            item = puller.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            index, frame, arrived = item
            if np.ndim(frame) != 2:
                raise InputError(f"frame {index} has shape {np.shape(frame)}; stream takes 2D "
                                 "frames (Y, X)")
            result = denoiser.denoise(frame, seed=_slice_seed(seed, index), **options)
            result.metadata.update(frame_index=index, stream_seed=int(seed))
            yield StreamResult(index, result, arrived, time.monotonic(), puller.queue.qsize(),
                               puller.dropped)
    finally:
        puller.stop_event.set()
