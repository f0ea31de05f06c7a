"""Axes of an image as read from a TIFF: naming, user override, plausibility, plane layout.

Letters (CSBDeep/CAREamics vocabulary): ``Y``, ``X`` (the image plane), ``C`` (channels),
``Z`` (depth), ``T`` (time), ``S`` (samples/positions: a stack of independent images)
and ``Q`` (a stack axis of unknown kind). tifffile's own letters are mapped onto these:
its ``S`` (samples per pixel, e.g. RGB) is ``C``; every other letter but ``TZCYX`` is ``Q``.

Every plane (each index of all axes but Y and X) is denoised on its own: channels one by
one (the model is one-channel), Z slices and time points alike. Outputs are written back
with the axes in the order of the file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = ["AXES_LETTERS", "Layout", "parse_axes", "layout_from_file"]

#: Letters accepted by ``--axes`` / ``axes=``.
AXES_LETTERS = "STCZYXQ"
#: Smallest plausible side of an image plane when the file does not say what its axes are.
MIN_PLANE_SIDE = 8
_TIFFFILE_KNOWN = frozenset("TZCYX")
_UNKNOWN = frozenset("QI")  # tifffile: Q = unknown (shaped files), I = generic page sequence


@dataclass(frozen=True)
class Layout:
    """How a series' array maps to planes.

    Attributes
    ----------
    file_axes : str
        Axes in the file's order after dropping singleton axes (other than Y, X),
        e.g. ``'YXC'``; outputs are written in this order.
    keep : tuple of int
        Indices of the series' dimensions kept (the others have size 1).
    known : bool
        True when the axes came from metadata (ImageJ, OME, tifffile) or ``axes=``.
    """

    file_axes: str
    keep: tuple[int, ...]
    known: bool

    @property
    def axes(self) -> str:
        """Canonical axes: the file's order with Y and X moved to the end."""
        return "".join(a for a in self.file_axes if a not in "YX") + "YX"

    @property
    def to_canonical(self) -> tuple[int, ...]:
        """Transpose order from ``file_axes`` to :attr:`axes`."""
        axes = self.file_axes
        stack = tuple(i for i, a in enumerate(axes) if a not in "YX")
        return stack + (axes.index("Y"), axes.index("X"))

    @property
    def to_file(self) -> tuple[int, ...]:
        """Transpose order from :attr:`axes` back to ``file_axes``."""
        return tuple(int(i) for i in np.argsort(self.to_canonical))


def parse_axes(axes: str, ndim: int, *, source: str) -> str:
    """Validate user axes (``--axes``/``axes=``) for a series of ``ndim`` dimensions.

    ``S`` is read as ``Q`` (a stack of independent images). Returns upper-case letters.

    Raises
    ------
    InputError
        Naming ``source``, if a letter is unknown or repeated, Y or X is missing, or
        the number of letters differs from ``ndim``.
    """
    text = str(axes).upper().replace("S", "Q")
    bad = sorted(set(text) - set(AXES_LETTERS))
    problems = []
    if bad:
        problems.append(f"unknown letter(s) {', '.join(bad)}; use {', '.join(AXES_LETTERS)}")
    if "Y" not in text or "X" not in text or text.index("Y") > text.index("X"):
        problems.append("Y and X must both be present, Y before X")
    if len(set(text.replace("Q", ""))) != len(text.replace("Q", "")):
        problems.append("a letter other than S/Q is repeated")
    if len(text) != ndim:
        problems.append(f"{len(text)} letters for {ndim} dimensions")
    if problems:
        raise InputError(f"{source}: axes {axes!r} do not fit: {'; '.join(problems)} "
                         "(e.g. YX, ZYX, TYX, YXC, CYX, TZYX, STYX)")
    return text


def _from_tifffile(axes: str) -> tuple[str, bool]:
    letters = []
    for a in axes.upper():
        letters.append("C" if a == "S" else a if a in _TIFFFILE_KNOWN else "Q")
    return "".join(letters), not (_UNKNOWN & set(axes.upper()))


def layout_from_file(shape: tuple[int, ...], tifffile_axes: str, *, source: str,
                     axes: str | None = None) -> Layout:
    """The :class:`Layout` of a series of ``shape`` whose tifffile axes are ``tifffile_axes``.

    ``axes`` (user override) replaces the file's axes. Singleton axes other than Y, X
    are dropped.

    Raises
    ------
    InputError
        Naming ``source``: bad ``axes``; several channels-or-Y/X letters; or, when the
        axes are unknown, an image plane smaller than ``MIN_PLANE_SIDE`` pixels on a side
        (e.g. a (64, 64, 4) channel-last array stored as grey reads as 64 images of 64x4).
    """
    if axes is not None:
        letters, known = parse_axes(axes, len(shape), source=source), True
    else:
        if len(tifffile_axes) != len(shape):
            tifffile_axes = "Q" * (len(shape) - 2) + "YX"
        letters, known = _from_tifffile(tifffile_axes)
    if len(shape) < 2 or "Y" not in letters or "X" not in letters:
        raise InputError(f"{source} is {len(shape)}-D (shape {tuple(shape)}, axes {letters}); "
                         "expected a 2-D image or a stack of 2-D images")
    if len(set(letters.replace("Q", ""))) != len(letters.replace("Q", "")):
        raise InputError(f"{source}: axes {letters} (shape {tuple(shape)}) repeat a letter; "
                         "pass the axes with --axes (API: axes=)")
    keep = tuple(i for i, (a, n) in enumerate(zip(letters, shape)) if n > 1 or a in "YX")
    file_axes = "".join(letters[i] for i in keep)
    sizes = dict(zip(letters, shape))
    if not known and min(sizes["Y"], sizes["X"]) < MIN_PLANE_SIDE:
        raise InputError(
            f"{source}: the file does not say what its axes are (tifffile reads {tifffile_axes} "
            f"for shape {tuple(shape)}): that would be {sizes['Y']}x{sizes['X']}-pixel images, "
            "which is implausible. If the last axis holds channels, pass --axes YXC "
            "(API: axes='YXC'); give the axes with --axes in any case (letters "
            f"{', '.join(AXES_LETTERS)}, e.g. YXC, CYX, ZYX, TZYX)"
        )
    return Layout(file_axes=file_axes, keep=keep, known=known)
