"""Mixed-precision (FP16) copies of a package's ONNX graphs for GPU engines.

TensorRT 10 can build FP16 engines from an FP32 ONNX with a builder flag; TensorRT 11
builds strongly typed networks only, so the precision must be in the ONNX itself. This
module converts a graph to FP16 with FP32 islands where FP16 is unsafe:

- graph inputs and outputs stay FP32 (``keep_io_types``): normalisation and the sample
  statistics happen outside the graph in FP32 and raw 16-bit intensities never enter it;
- the reparameterisation ``z = mu + exp(logvar / 2) * eps`` stays FP32: FP16 overflows at
  exp(x) for x > ~11 and the clamp/exp/multiply/add chain is cheap.

The islands are found structurally (from each ``eps_<i>`` input to the Add that forms z, and
from that Mul back through the elementwise ops to the posterior Conv), not by node names.
"""
from __future__ import annotations

from pathlib import Path

from hdn_deploy._optional import require

_ELEMENTWISE = {"Mul", "Div", "Add", "Exp", "Clip", "Slice", "Split", "Identity", "Cast",
                "Min", "Max"}


def _index(graph):
    producers, consumers = {}, {}
    for node in graph.node:
        for name in node.output:
            producers[name] = node
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producers, consumers


def reparameterisation_nodes(model) -> list[str]:
    """Names of the nodes computing ``mu + exp(logvar / 2) * eps`` for every eps input."""
    graph = model.graph
    producers, consumers = _index(graph)
    keep: set[str] = set()
    for graph_input in graph.input:
        if not graph_input.name.startswith("eps_"):
            continue
        frontier = list(consumers.get(graph_input.name, []))
        for node in list(frontier):  # the Mul with eps and the Add that forms z after it
            for out in node.output:
                frontier.extend(n for n in consumers.get(out, []) if n.op_type == "Add")
        stack = list(frontier)
        while stack:  # walk back to the posterior Conv through elementwise ops
            node = stack.pop()
            if node.name in keep or node.op_type not in _ELEMENTWISE:
                continue
            keep.add(node.name)
            stack.extend(producers[i] for i in node.input if i in producers)
    return sorted(keep)


def _name_all_nodes(model) -> None:
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def _isolate_outputs(model) -> None:
    """Give every graph output its own Identity node: the converter mistypes a tensor that
    is both a graph output (kept FP32) and an input of further FP16 nodes (the encoder's
    per-level features are)."""
    onnx = require("onnx", purpose="FP16 conversion")
    graph = model.graph
    for out in graph.output:
        internal = f"{out.name}__internal"
        for node in graph.node:
            node.output[:] = [internal if o == out.name else o for o in node.output]
            node.input[:] = [internal if i == out.name else i for i in node.input]
        graph.node.append(onnx.helper.make_node("Identity", [internal], [out.name],
                                                name=f"{out.name}__output"))


def fp16_graph(source: str | Path, target: str | Path) -> dict:
    """Write an FP16 copy of ``source`` with FP32 I/O and FP32 reparameterisation.

    Returns a summary: nodes kept in FP32 and the conversion settings.
    """
    onnx = require("onnx", purpose="FP16 conversion")
    float16 = require("onnxconverter_common.float16", purpose="FP16 conversion").__dict__
    model = onnx.load(str(source))
    _isolate_outputs(model)
    _name_all_nodes(model)
    keep = reparameterisation_nodes(model)
    converted = float16["convert_float_to_float16"](
        model, keep_io_types=True, node_block_list=keep, disable_shape_infer=False,
    )
    onnx.save(converted, str(target))
    return {"precision": "fp16", "fp32_nodes": keep, "keep_io_types": True}


def fp16_package(package_dir: str | Path, output: str | Path, *, overwrite: bool = False) -> Path:
    """Copy a model package with both graphs converted by :func:`fp16_graph`.

    The manifest records ``precision: fp16``, the FP32 nodes and the new graph hashes.
    """
    import dataclasses
    import json

    from hdn_deploy.atomic import staged_folder
    from hdn_deploy.errors import PackageError
    from hdn_deploy.manifest import GraphPrecision, Graphs, Precision, manifest_to_json
    from hdn_deploy.package import MANIFEST_FILE, load_package, sha256_file

    package = load_package(package_dir)
    output = Path(output)
    if output.exists() and not overwrite:
        raise PackageError(f"{output} exists already; remove it or pass overwrite=True")
    source = package.manifest.graphs
    with staged_folder(output) as staging:
        entries, fp32_nodes = {}, {}
        for name in ("encoder", "decoder"):
            entry = source.entry(name)
            summary = fp16_graph(package.path / entry.file, staging / entry.file)
            fp32_nodes[name] = tuple(summary["fp32_nodes"])
            entries[name] = dataclasses.replace(entry, sha256=sha256_file(staging / entry.file))
        manifest = dataclasses.replace(
            package.manifest, graphs=Graphs(**entries),
            precision=Precision(kind=GraphPrecision.FP16,
                                source_package_graphs={"encoder": source.encoder.sha256,
                                                       "decoder": source.decoder.sha256},
                                fp32_nodes=fp32_nodes))
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest_to_json(manifest), indent=2))
    return output
