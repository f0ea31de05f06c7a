"""FP16 copies of a package: FP32 I/O and reparameterisation, small MMSE change (CPU proxy:
onnxruntime CPU runs the same FP16 graph a GPU engine would be built from)."""
import warnings

import onnx
import pytest

from conftest import noisy, synthetic_clean
from hdn_deploy.denoiser import Denoiser
from hdn_deploy.export.precision import _name_all_nodes, fp16_package, reparameterisation_nodes
from hdn_deploy.metrics import psnr
from hdn_deploy.package import load_package


@pytest.fixture(scope="module")
def fp16_pkg(tiny_package, tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnxconverter-common warns about tiny weights
        return fp16_package(tiny_package, tmp_path_factory.mktemp("fp16") / "pkg")


def test_reparameterisation_islands_cover_every_sampled_level(tiny_package):
    model = onnx.load(str(load_package(tiny_package).decoder_path))
    _name_all_nodes(model)
    keep = set(reparameterisation_nodes(model))
    ops = {n.name: n.op_type for n in model.graph.node}
    assert sum(ops[k] == "Exp" for k in keep) == 3  # one exp(logvar / 2) per sampled level
    eps_consumers = {n.name for n in model.graph.node
                     if n.op_type == "Mul" and any(i.startswith("eps_") for i in n.input)}
    assert len(eps_consumers) == 3
    assert eps_consumers <= keep
    assert not any(ops[k] == "Conv" for k in keep)


def test_fp16_package_keeps_fp32_io_and_stays_close(fp16_pkg, tiny_package):
    package = load_package(fp16_pkg)
    assert package.manifest.graph_precision.value == "fp16"
    decoder = onnx.load(str(package.decoder_path))
    fp16 = onnx.TensorProto.FLOAT16
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in decoder.graph.input)
    assert any(t.data_type == fp16 for t in decoder.graph.initializer)
    clean = synthetic_clean(64, 64)
    image = noisy(clean)
    results = {}
    for name, pkg in (("fp32", tiny_package), ("fp16", fp16_pkg)):
        results[name] = Denoiser(pkg, backend="cpu", threads=1).denoise(image, n_samples=8, seed=5)
    gap = abs(psnr(results["fp16"].mmse, clean) - psnr(results["fp32"].mmse, clean))
    agreement = psnr(results["fp16"].mmse, results["fp32"].mmse)
    assert gap < 0.05, gap
    assert agreement > 45, agreement
