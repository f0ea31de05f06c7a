"""One self-contained ONNX graph for the BioImage Model Zoo: raw image -> MMSE and std.

The zoo (bioimage.io) replays fixed test inputs and compares the outputs, and its
consumers (bioimageio.core, deepImageJ, ilastik, QuPath...) feed only the image. A model
package's decoder takes the latent noise ``eps_<i>`` as inputs; this module wires the
package's two graphs into one graph that makes that noise itself, **deterministically**:

    raw (1, 1, H, W)                         float32, input intensity units
      -> (raw - mean) / std                  the package's normalisation
      -> reflection pad bottom/right to multiples of ``spatial_multiple``
      -> encoder.onnx                        bottom-up features, once
      -> eps_<i> = hash noise (below), K samples as K/2 antithetic pairs (eps, -eps)
      -> decoder.onnx (batch K)              K posterior samples
      -> mean and std over the K samples (ddof 0), crop, de-normalise
    mmse (1, 1, H, W), std (1, 1, H, W)      float32, input intensity units

Noise contract (pure function, no random operator, same bits on every run and machine
up to float rounding): for level ``l`` with ``C`` channels and latent size ``(h, w)``,
pair ``p`` (0 <= p < K/2), channel ``c``, latent pixel ``(y, x)``, let
``j = ((p * C + c) * h + y) * w + x`` and ``key_l`` a 32-bit key derived from
``(seed, l)``; then ``u_t = (mix32((2 j + t) xor key_l) div 2**8 + 1/2) / 2**24`` for
``t = 0, 1`` and ``eps = sqrt(-2 ln u_0) cos(2 pi u_1)`` (Box-Muller), where ``mix32``
is a 32-bit integer hash (two rounds of xor-shift-16 and multiply by 0x45d9f3b).
Sample ``2p`` uses ``eps``, sample ``2p + 1`` uses ``-eps``. :func:`reference_eps`
computes the same numbers in numpy. ``j`` wraps modulo 2**31 beyond ~2e9 latent
values per level (images over ~8000 x 8000 pixels at 8 samples); the noise then repeats.

These are not the runtime's Philox latents (``hdn_deploy.latents``): the zoo graph and
``hdn-deploy denoise`` estimate the same posterior mean with different noise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from hdn_deploy.errors import ConfigError
from hdn_deploy.package import ModelPackage

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "level_keys", "reference_eps", "build_bmz_graph"]

INPUT_NAME = "raw"
OUTPUT_NAMES = ("mmse", "std")
_MASK32 = 0xFFFFFFFF
_MULT = 0x45D9F3B
_OPSET = 18


def level_keys(seed: int, levels: list[int]) -> dict[int, int]:
    """32-bit hash key of each latent level for ``seed`` (a pure function of both)."""
    return {lv: int(np.random.SeedSequence([seed, lv]).generate_state(1, np.uint32)[0])
            for lv in levels}


def _mix32_np(x: np.ndarray) -> np.ndarray:
    for _ in range(2):
        x = ((x // 65536) ^ x) * _MULT & _MASK32
    return (x // 65536) ^ x


def reference_eps(key: int, pairs: int, channels: int, height: int, width: int) -> np.ndarray:
    """The graph's noise for one level in numpy: float32 ``(2 * pairs, C, h, w)``,
    samples ``2p`` and ``2p + 1`` are ``eps`` and ``-eps`` (see the module docstring)."""
    j = np.arange(pairs * channels * height * width, dtype=np.int64) & 0x7FFFFFFF
    u = [((_mix32_np((2 * j + t) ^ key) // 256).astype(np.float32) + 0.5) / 2.0**24
         for t in (0, 1)]
    eps = (np.sqrt(-2 * np.log(u[0])) * np.cos(2 * np.pi * u[1])).astype(np.float32)
    eps = eps.reshape(pairs, channels, height, width)
    return np.stack([eps, -eps], axis=1).reshape(2 * pairs, channels, height, width)


class _Nodes:
    """Collects nodes and constants of the wrapper graph under unique names."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{self.prefix}/{stem}_{self._count}"

    def const(self, value, dtype=np.int64) -> str:
        name = self.name("const")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def _mix32(g: _Nodes, x: str) -> str:
    shift, mult, mask = g.const(65536), g.const(_MULT), g.const(_MASK32)
    for _ in range(2):
        x = g.op("BitwiseXor", g.op("Div", x, shift), x)
        x = g.op("BitwiseAnd", g.op("Mul", x, mult), mask)
    return g.op("BitwiseXor", g.op("Div", x, shift), x)


def _eps_nodes(g: _Nodes, features: str, key: int, pairs: int, channels: int, out: str) -> None:
    """eps (2 * pairs, C, h, w) for the level whose bottom-up features are ``features``."""
    hw = g.op("Slice", g.op("Shape", features), g.const([2]), g.const([4]))
    shape = g.op("Concat", g.const([pairs, channels]), hw, axis=0)
    count = g.op("ReduceProd", shape, keepdims=0)
    j = g.op("BitwiseAnd", g.op("Range", g.const(0), count, g.const(1)), g.const(0x7FFFFFFF))
    two_j = g.op("Mul", j, g.const(2))
    uniforms = []
    for t in (0, 1):
        h = _mix32(g, g.op("BitwiseXor", g.op("Add", two_j, g.const(t)), g.const(key)))
        top = g.op("Cast", g.op("Div", h, g.const(256)), to=TensorProto.FLOAT)
        uniforms.append(g.op("Div", g.op("Add", top, g.const(0.5, np.float32)),
                             g.const(2.0**24, np.float32)))
    radius = g.op("Sqrt", g.op("Mul", g.op("Log", uniforms[0]), g.const(-2.0, np.float32)))
    angle = g.op("Cos", g.op("Mul", uniforms[1], g.const(2 * np.pi, np.float32)))
    eps = g.op("Reshape", g.op("Mul", radius, angle), shape)
    pair_shape = g.op("Concat", g.const([pairs, 1, channels]), hw, axis=0)
    both = g.op("Concat", g.op("Reshape", eps, pair_shape),
                g.op("Reshape", g.op("Neg", eps), pair_shape), axis=1)
    g.op("Reshape", both, g.op("Concat", g.const([2 * pairs, channels]), hw, axis=0), out=out)


def _pad_nodes(g: _Nodes, image: str, multiple: int, margin: int, out: str) -> str:
    """Reflection-pad ``image`` by ``margin`` on every side (context, so borders and
    corners do not see the network's zero padding; as the runtime does), then bottom/right
    to multiples of ``multiple``; returns the name of its original (H, W) shape tensor.
    Two Pad nodes, because ONNX reflection pads must be shorter than the padded axis."""
    hw = g.op("Slice", g.op("Shape", image), g.const([2]), g.const([4]))
    framed = g.op("Pad", image, g.const([0, 0, margin, margin, 0, 0, margin, margin]),
                  mode="reflect")
    m = g.const(multiple)
    extra = g.op("Mod", g.op("Sub", m, g.op("Mod", g.op("Add", hw, g.const(2 * margin)), m)), m)
    pads = g.op("Concat", g.const([0, 0, 0, 0, 0, 0]), extra, axis=0)
    g.op("Pad", framed, pads, mode="reflect", out=out)
    return hw


def _stats_nodes(g: _Nodes, samples: str, hw: str, margin: int, package: ModelPackage) -> None:
    """mean and std over the sample axis, cropped to (H, W) inside the margin and
    de-normalised."""
    axis0 = g.const([0])
    mean = g.op("ReduceMean", samples, axis0, keepdims=1)
    dev = g.op("Sub", samples, mean)
    std = g.op("Sqrt", g.op("ReduceMean", g.op("Mul", dev, dev), axis0, keepdims=1))
    scale = g.const(package.std, np.float32)
    for value, offset, out in ((mean, package.mean, "mmse"), (std, 0.0, "std")):
        cropped = g.op("Slice", value, g.const([margin, margin]), g.op("Add", hw, g.const(margin)),
                       g.const([2, 3]))
        g.op("Add", g.op("Mul", cropped, scale), g.const(offset, np.float32), out=out)


def context_margin(package: ModelPackage) -> int:
    """Pixels reflection-padded on every side: the runtime's default margin."""
    return package.recommended_overlap // 2


def min_input_size(package: ModelPackage) -> int:
    """Smallest height/width the zoo graph takes (reflection needs margin < size)."""
    return max(package.spatial_multiple, context_margin(package) + 1)


def build_bmz_graph(package: ModelPackage, *, n_samples: int = 8, seed: int = 0) -> onnx.ModelProto:
    """The zoo graph of ``package``: ``raw`` (1, 1, H, W) float32 -> ``mmse`` and ``std``
    (1, 1, H, W) float32, both in input units, over ``n_samples`` deterministic posterior
    samples (antithetic pairs). The image is reflection-padded by the runtime's default
    margin (half the recommended overlap) on every side. H and W may be any size >
    that margin and >= ``spatial_multiple`` / 2 + 1.

    Raises
    ------
    ConfigError
        If ``n_samples`` is not an even number >= 2.
    """
    if n_samples < 2 or n_samples % 2:
        raise ConfigError(f"n_samples must be an even number >= 2 (antithetic pairs), got {n_samples}")
    encoder = compose.add_prefix(onnx.load(str(package.encoder_path)), "enc/")
    decoder = compose.add_prefix(onnx.load(str(package.decoder_path)), "dec/")
    levels = package.sampled_levels
    keys = level_keys(seed, [lv.index for lv in levels])
    g = _Nodes("bmz_in")
    normalised = g.op("Div", g.op("Sub", INPUT_NAME, g.const(package.mean, np.float32)),
                      g.const(package.std, np.float32))
    margin = context_margin(package)
    hw = _pad_nodes(g, normalised, package.spatial_multiple, margin, out="enc/image")
    wiring = _Nodes("bmz_eps")
    for lv in levels:
        wiring.op("Identity", f"enc/bu_{lv.index}", out=f"dec/bu_{lv.index}")
        _eps_nodes(wiring, f"enc/bu_{lv.index}", keys[lv.index], n_samples // 2, lv.channels,
                   out=f"dec/eps_{lv.index}")
    tail = _Nodes("bmz_out")
    _stats_nodes(tail, "dec/samples", hw, margin, package)
    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 1, "height", "width"])
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, "height", "width"])
               for n in OUTPUT_NAMES]
    graph = helper.make_graph(
        g.nodes + list(encoder.graph.node) + wiring.nodes + list(decoder.graph.node) + tail.nodes,
        "hdn_mmse", [image], outputs,
        initializer=g.inits + list(encoder.graph.initializer) + wiring.inits
        + list(decoder.graph.initializer) + tail.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="hdn-deploy")
    model.ir_version = max(encoder.ir_version, decoder.ir_version)
    onnx.checker.check_model(model, full_check=True)
    return model


def save_graph(model: onnx.ModelProto, path: Path) -> None:
    """Serialise ``model`` to ``path`` atomically."""
    from hdn_deploy.atomic import atomic_write_bytes

    atomic_write_bytes(path, model.SerializeToString())
