"""Quantisation variants of the bundled decoder (issue 16, int8 item): speed and PSNR loss.

For each variant: the decoder quantised with onnxruntime.quantization (calibrated as
``export/int8.py`` calibrates: 32 feeds of 128x128 crops of the training images, the
first 75 % of every frame); speed = median of ``--repeats`` decoder runs (one sample,
256x256, one thread), fp32 and int8 alternately in this process; estimated loss =
``check_int8`` on the held-out patches; real loss = PSNR of the 16-sample MMSE of
``nuclei_noisy.tif`` (never used for calibration) against ``nuclei_clean.tif``, fp32
minus int8, same seed.

    OMP_NUM_THREADS=1 python benchmarks/int8_variants.py \
        --calibration-data runs/default-model/data \
        --out benchmarks/results/direct_int8/int8_variants.json [--only NAME ...]

The JSON accumulates: variants already in it are skipped. ``--retime A B ...`` times
only fp32 and those variants alternately in one loop; ``--profile A`` prints the share of
kernel time per operator type of fp32 and variant A (onnxruntime's profiler, 6 runs).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from hdn_deploy.denoiser import Denoiser
from hdn_deploy.export.int8 import CHECK_FRACTION, _check_patches, calibration_feeds, check_int8
from hdn_deploy.manifest import manifest_to_json
from hdn_deploy.metrics import psnr
from hdn_deploy.package import MANIFEST_FILE, load_package, sha256_file
from hdn_deploy.training.data import load_frames, split_frames

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "hdn_deploy" / "models" / "default"
SAMPLE = REPO / "hdn_deploy" / "sample_data"

# node-name patterns kept in float
EXCLUDE = {
    "out": [r"^/output_conv/"],
    "out+q": [r"^/output_conv/", r"^/conv_in_q"],
    "out+q+zout": [r"^/output_conv/", r"^/conv_in_q", r"^/conv_out"],
    "out+q+zout+ct": [r"^/output_conv/", r"^/conv_in_q", r"^/conv_out", r"ConvTranspose$"],
}

VARIANTS = {
    "baseline": {},
    "reduce_range": {"reduce_range": True},
    "u8u8_qop": {"format": "QOperator", "weight_type": "QUInt8"},
    "qoperator": {"format": "QOperator"},
    "percentile": {"calibrate": "Percentile"},
    "entropy": {"calibrate": "Entropy"},
    "act_sym": {"act_sym": True, "activation_type": "QInt8"},
    "excl_out": {"exclude": "out"},
    "excl_out_q": {"exclude": "out+q"},
    "excl_out_q_zout": {"exclude": "out+q+zout"},
    "excl_out_q_zout_ct": {"exclude": "out+q+zout+ct"},
    "rr_excl_out_q_zout": {"reduce_range": True, "exclude": "out+q+zout"},
    "rr_pct_excl_out_q_zout": {"reduce_range": True, "calibrate": "Percentile",
                               "exclude": "out+q+zout"},
    "baseline_ext": {"opt": "extended"},
    "qop_rr": {"format": "QOperator", "reduce_range": True},
    "qop_rr_pre": {"format": "QOperator", "reduce_range": True, "preprocess": True},
    "qop_rr_pre_ops": {"format": "QOperator", "reduce_range": True, "preprocess": True,
                       "ops": ["Conv", "ConvTranspose", "Mul", "Add", "Sigmoid", "Concat"]},
    "qop_sym_pre": {"format": "QOperator", "act_sym": True, "activation_type": "QInt8",
                    "preprocess": True},
    "qdq_rr_pre": {"reduce_range": True, "preprocess": True},
    "qop_rr_again": {"format": "QOperator", "reduce_range": True},
    # only the full- and half-resolution convolutions (level 0 and the final blocks)
    "qop_rr_hires": {"format": "QOperator", "reduce_range": True,
                     "only": r"^/final_top_down/|_5/Conv$|^/output_conv/"},
    "qdq_rr_hires": {"reduce_range": True, "only": r"^/final_top_down/|_5/Conv$|^/output_conv/"},
}


def quantize(src: Path, dst: Path, feeds: list[dict], v: dict) -> list[str]:
    import onnx
    from onnxruntime import quantization as q

    if v.get("preprocess"):  # shape inference + onnxruntime optimisation (folds BatchNorm)
        from onnxruntime.quantization.shape_inference import quant_pre_process
        pre = dst.with_suffix(".pre.onnx")
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        src = pre
    names = [n.name for n in onnx.load(str(src)).graph.node if n.op_type in ("Conv", "ConvTranspose")]
    excluded = [n for n in names if any(re.search(p, n) for p in EXCLUDE.get(v.get("exclude"), []))
                or ("only" in v and not re.search(v["only"], n))]

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    extra = {"ActivationSymmetric": True} if v.get("act_sym") else {}
    if v.get("calibrate") == "Percentile":
        extra["CalibPercentile"] = 99.99
    logging.getLogger().setLevel(logging.ERROR)
    q.quantize_static(str(src), str(dst), Reader(),
                      quant_format=getattr(q.QuantFormat, v.get("format", "QDQ")),
                      activation_type=getattr(q.QuantType, v.get("activation_type", "QUInt8")),
                      weight_type=getattr(q.QuantType, v.get("weight_type", "QInt8")),
                      per_channel=True, reduce_range=v.get("reduce_range", False),
                      calibrate_method=getattr(q.CalibrationMethod, v.get("calibrate", "MinMax")),
                      op_types_to_quantize=v.get("ops", ["Conv", "ConvTranspose"]),
                      nodes_to_exclude=excluded, extra_options=extra)
    if v.get("preprocess"):
        src.unlink()
    return excluded


def make_package(package, work: Path, feeds, v) -> tuple[Path, list[str]]:
    import dataclasses
    out = work / "pkg"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(package.path, out)
    decoder = out / package.manifest.graphs.decoder.file
    excluded = quantize(package.decoder_path, decoder, feeds, v)
    m = package.manifest
    m = dataclasses.replace(m, graphs=dataclasses.replace(m.graphs, decoder=dataclasses.replace(
        m.graphs.decoder, sha256=sha256_file(decoder))))
    (out / MANIFEST_FILE).write_text(json.dumps(manifest_to_json(m)))
    return out, excluded


def session(path: Path, opt: str):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    o.log_severity_level = 3
    o.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                         {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED"}[opt])
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def speed_feed(package, image: np.ndarray) -> dict:
    return next(calibration_feeds(package, [image], 1, 256, seed=123))


def timing(fp32_path: Path, int8_path: Path, feed: dict, opt: str, repeats: int) -> dict:
    a, b = session(fp32_path, "all"), session(int8_path, opt)
    a.run(None, feed), b.run(None, feed)
    ta, tb = [], []
    for _ in range(repeats):
        for s, t in ((a, ta), (b, tb)):
            start = time.perf_counter()
            s.run(None, feed)
            t.append(time.perf_counter() - start)
    ma, mb = statistics.median(ta), statistics.median(tb)
    return {"fp32_s": ma, "int8_s": mb, "speedup": ma / mb}


def retime(package, feeds, feed, names: list[str], repeats: int, work: Path) -> dict:
    """fp32 and the named variants' decoders alternated ``repeats`` times in one loop."""
    sessions = {"fp32": session(package.decoder_path, "all")}
    for name in names:
        quantize(package.decoder_path, work / f"{name}.onnx", feeds, VARIANTS[name])
        sessions[name] = session(work / f"{name}.onnx", VARIANTS[name].get("opt", "all"))
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, feed)
    for _ in range(repeats):
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feed)
            times[k].append(time.perf_counter() - start)
    ms = {k: statistics.median(t) for k, t in times.items()}
    return {k: {"ms": 1000 * m, "speedup": ms["fp32"] / m} for k, m in ms.items()}


def profile(path: Path, feed: dict, runs: int, work: Path) -> dict:
    """Share (%) of kernel time per operator type over ``runs`` runs (onnxruntime profiler)."""
    import collections
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    o.log_severity_level = 3
    o.enable_profiling = True
    o.profile_file_prefix = str(work / path.stem)
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        s.run(None, feed)
    per_op: collections.Counter = collections.Counter()
    for event in json.loads(Path(s.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values())
    return {"ms_per_run": total / runs / 1000,
            "percent": {k: round(100 * v / total, 1) for k, v in per_op.most_common(10)}}


def real_psnr(pkg: Path, noisy, clean) -> float:
    res = Denoiser(pkg, backend="cpu", threads=1).denoise(noisy, n_samples=16, seed=0)
    return psnr(res.mmse, clean)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calibration-data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--only", nargs="*")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--retime", nargs="*", help="only re-time these variants side by side")
    p.add_argument("--profile", help="only profile fp32 and this variant's decoder (6 runs)")
    args = p.parse_args()
    package = load_package(MODEL)
    m = package.spatial_multiple
    frames, _ = load_frames([args.calibration_data], m)
    train, held_out = split_frames(frames, CHECK_FRACTION, m)
    feeds = list(calibration_feeds(package, train, 32, 128, 0))
    patches = _check_patches(held_out, 128, 8, m, 1)
    feed = speed_feed(package, frames[0])
    if args.retime or args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            if args.retime:
                print(json.dumps(retime(package, feeds, feed, args.retime, args.repeats, Path(tmp))))
            else:
                quantize(package.decoder_path, Path(tmp) / "int8.onnx", feeds, VARIANTS[args.profile])
                print(json.dumps({"fp32": profile(package.decoder_path, feed, 6, Path(tmp)),
                                  args.profile: profile(Path(tmp) / "int8.onnx", feed, 6, Path(tmp))}))
        return
    noisy = tifffile.imread(SAMPLE / "nuclei_noisy.tif").astype(np.float32)
    clean = tifffile.imread(SAMPLE / "nuclei_clean.tif").astype(np.float32)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    if "fp32_psnr" not in results:
        results["fp32_psnr"] = real_psnr(MODEL, noisy, clean)
    for name, v in VARIANTS.items():
        if (args.only and name not in args.only) or name in results:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            pkg, excluded = make_package(package, Path(tmp), feeds, v)
            row = {"config": v, "excluded": len(excluded),
                   **timing(package.decoder_path, pkg / "decoder.onnx", feed, v.get("opt", "all"),
                            args.repeats)}
            check = check_int8(MODEL, pkg, patches, n_samples=8, max_loss_db=0.1, seed=0)
            row["est_loss_db"] = check.estimated_psnr_loss_db
            row["int8_psnr"] = real_psnr(pkg, noisy, clean)
            row["real_loss_db"] = results["fp32_psnr"] - row["int8_psnr"]
            row["seconds"] = time.perf_counter() - start
            row["load"] = os.getloadavg()[0]
        results[name] = row
        print(name, json.dumps(row), flush=True)
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
