"""Check a package's ONNX graphs against its manifest when the package is loaded.

A graph from another model (hashes updated by hand, a mixed-up copy) would otherwise fail
with an onnxruntime traceback at the first tile. The inputs and outputs of each graph are
read from the ONNX protobuf directly (a few fields of ``ModelProto.graph``; the weights are
skipped, not parsed; graphs are a few MB), so no onnx package or inference session is needed.

Expected, for every sampled level i with C_i latent and F_i feature channels:

- encoder: input ``image`` (1, 1, H, W); outputs ``bu_<i>`` (1, F_i, h_i, w_i);
- decoder: inputs ``bu_<i>`` (1, F_i, h_i, w_i) and ``eps_<i>`` (N, C_i, h_i, w_i);
  output ``samples`` (N, 1, H, W);
- direct (optional): input ``image`` (1, 1, H, W); output ``mmse`` (1, 1, H, W).

All float32, rank 4; dimensions given as names (dynamic) are not compared: the encoder
of version-1 exports names its output channels, exports since version 2 state them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .errors import PackageError

if TYPE_CHECKING:
    from .package import ModelPackage

FLOAT = 1  # onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: name, element type (ONNX enum, 1 = float32) and dims
    (int, or str for a named dynamic dimension, or None when unspecified)."""

    name: str
    elem_type: int
    dims: tuple[int | str | None, ...]


# ----------------------------------------------------------------- protobuf reading
def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of one protobuf message: ints for varints, views for bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated field")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (1, 5):
            value, pos = 0, pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def _first(buf: memoryview, number: int):
    return next((v for n, v in _fields(buf) if n == number), None)


def _tensor_info(value_info: memoryview) -> TensorInfo:
    name = bytes(_first(value_info, 1) or b"").decode()
    type_proto = _first(value_info, 2)
    tensor = _first(type_proto, 1) if type_proto is not None else None
    if tensor is None:
        return TensorInfo(name, 0, ())
    elem = _first(tensor, 1) or 0
    shape = _first(tensor, 2)
    dims: list[int | str | None] = []
    for number, dim in _fields(shape) if shape is not None else ():
        if number == 1:
            value, param = _first(dim, 1), _first(dim, 2)
            dims.append(value if value is not None else
                        bytes(param).decode() if param is not None else None)
    return TensorInfo(name, int(elem), tuple(dims))


def graph_io(path: str | Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """(inputs, outputs) of the ONNX model at ``path``; initializers are not inputs.

    Raises
    ------
    PackageError
        The file is not a readable ONNX model.
    """
    try:
        graph = _first(memoryview(Path(path).read_bytes()), 7)  # ModelProto.graph
        if graph is None:
            raise ValueError("no graph")
        inputs, outputs, initializers = [], [], set()
        for number, value in _fields(graph):
            if number == 11:
                inputs.append(_tensor_info(value))
            elif number == 12:
                outputs.append(_tensor_info(value))
            elif number == 5:  # TensorProto initializer: its name is field 8
                initializers.add(bytes(_first(value, 8) or b"").decode())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise PackageError(f"{path}: not a readable ONNX model ({exc})") from exc
    return [i for i in inputs if i.name not in initializers], outputs


# ------------------------------------------------------------------------- checking
def expected_io(package: "ModelPackage", graph: str) -> tuple[dict[str, int], dict[str, int]]:
    """``({input name: channels}, {output name: channels})`` the manifest implies."""
    levels = package.manifest.sampled_levels
    bu = {f"bu_{lv.index}": lv.feature_channels for lv in levels}
    if graph == "encoder":
        return {"image": 1}, bu
    if graph == "direct":
        return {"image": 1}, {"mmse": 1}
    return {**bu, **{f"eps_{lv.index}": lv.channels for lv in levels}}, {"samples": 1}


def _problems(kind: str, found: list[TensorInfo], expected: dict[str, int]) -> list[str]:
    names = {t.name for t in found}
    problems = []
    missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
    if missing:
        problems.append(f"{kind}s {missing} are missing")
    if extra:
        problems.append(f"unexpected {kind}s {extra}")
    for t in found:
        if t.name not in expected:
            continue
        if t.elem_type != FLOAT:
            problems.append(f"{kind} {t.name} has ONNX element type {t.elem_type}, not float32")
        if len(t.dims) != 4:
            problems.append(f"{kind} {t.name} has rank {len(t.dims)}, expected 4")
        elif isinstance(t.dims[1], int) and t.dims[1] != expected[t.name]:
            problems.append(f"{kind} {t.name} has {t.dims[1]} channels, the manifest says "
                            f"{expected[t.name]}")
    return problems


def check_graphs(package: "ModelPackage") -> None:
    """PackageError naming the package, the graph and every mismatch between a graph's
    inputs/outputs (names, float32, rank 4, channel counts) and the manifest."""
    for graph in ("encoder", "decoder") + (("direct",) if package.has_direct else ()):
        path = package.graph_path(graph)
        inputs, outputs = graph_io(path)
        want_in, want_out = expected_io(package, graph)
        problems = _problems("input", inputs, want_in) + _problems("output", outputs, want_out)
        if problems:
            raise PackageError(
                f"{package.path}: the {graph} graph ({path.name}) does not match the manifest: "
                f"{'; '.join(problems)}. Is {path.name} from another model? Re-export the "
                "package (`hdn-deploy export`) instead of copying graphs between packages")
