"""Denoise frames as Micro-Manager acquires them, through pycro-manager's image processor.

pycro-manager calls ``image_process_fn(image, metadata)`` for every acquired frame (a 2D
numpy array and a dict whose ``"Axes"`` identify the frame) and takes back
``(image, metadata)``, or a list of such pairs whose ``"Axes"``/``"Channel"`` differ. This
module imports nothing of pycro-manager or Micro-Manager; it was tested as a plain
function with dicts shaped like pycro-manager's, not with Micro-Manager (which is not
installable on the machine it was developed on).

    from pycromanager import Acquisition, multi_d_acquisition_events
    from hdn_deploy.integrations.pycromanager import DenoiseHook

    hook = DenoiseHook("my_model", n_samples=16, keep_raw=True)   # loads the model once
    with Acquisition(directory="data", name="run", image_process_fn=hook) as acq:
        acq.acquire(multi_d_acquisition_events(num_time_points=10))
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..denoiser import Denoiser
from ..errors import InputError
from ..io import cast_to_dtype

__all__ = ["DenoiseHook"]


class DenoiseHook:
    """``(image, metadata) -> (image, metadata)``, or ``[(raw, metadata), (mmse, metadata')]``.

    Parameters
    ----------
    model
        Model package folder or a loaded :class:`~hdn_deploy.Denoiser` (reused for every
        frame; load once, before the acquisition starts).
    keep_raw
        False (default): return the denoised frame in place of the raw one. True: return
        both; the denoised one's channel is renamed ``<channel><suffix>`` in
        ``metadata["Axes"]["channel"]`` and ``metadata["Channel"]`` so pycro-manager saves
        and shows it as its own channel.
    suffix
        Channel name suffix of the denoised frame (``"_hdn"``).
    output_dtype
        ``"input"`` (default): the MMSE rounded and clipped to the frame's dtype (uint16
        stays uint16, which Micro-Manager's storage expects); ``"float32"``: as computed.
    **options
        Denoising options (``n_samples``, ``seed``, ``tolerance``, ``sampling`` ...) as
        :meth:`hdn_deploy.Denoiser.iter_denoise`. Every frame uses the same ``seed``.

    The denoised frame's metadata gets ``"hdn_deploy"``: a JSON string of the run's
    metadata (model hash, samples, seed, samples per tile ...). The input metadata dict is
    not modified. Raises InputError for a frame that is not 2D.
    """

    def __init__(self, model: str | Path | Denoiser, *, keep_raw: bool = False,
                 suffix: str = "_hdn", output_dtype: str = "input", backend: str = "auto",
                 threads: int | None = None, **options: Any) -> None:
        self.denoiser = model if isinstance(model, Denoiser) else Denoiser(
            model, backend=backend, threads=threads)
        if output_dtype not in ("input", "float32"):
            raise InputError(f"output_dtype must be 'input' or 'float32', got {output_dtype!r}")
        self.keep_raw, self.suffix, self.output_dtype = keep_raw, suffix, output_dtype
        self.options = options

    def __call__(self, image: np.ndarray, metadata: dict[str, Any]):
        image = np.asarray(image)
        if image.ndim != 2:
            raise InputError(f"pycro-manager frame has shape {image.shape}; expected a 2D frame")
        result = self.denoiser.denoise(image, **self.options)
        mmse = result.mmse if self.output_dtype == "float32" else cast_to_dtype(result.mmse, image.dtype)
        meta = copy.deepcopy(metadata)
        meta["hdn_deploy"] = json.dumps(result.metadata)
        if not self.keep_raw:
            return mmse, meta
        self._rename_channel(meta)
        return [(image, metadata), (mmse, meta)]

    def _rename_channel(self, meta: dict[str, Any]) -> None:
        axes = meta.setdefault("Axes", {})
        name = f"{axes.get('channel', meta.get('Channel', 'raw'))}{self.suffix}"
        axes["channel"] = name
        meta["Channel"] = name
