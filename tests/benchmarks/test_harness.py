"""The benchmark harness runs on a tiny model and its helpers compute what they claim.

Benchmarks are not tests: nothing here checks speed, only that the harness produces
complete, finite, consistent reports quickly.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from hdn_deploy.benchmark import (
    PHASES,
    bench_runtime,
    encoder_reuse,
    peak_rss_mb,
    percentiles,
    psnr,
    quality_curve,
    quality_grid,
    running_mmse,
    samples_needed,
    summarize,
)
from hdn_deploy.cli.main import main
from hdn_deploy.denoiser import Denoiser
from hdn_deploy.errors import ConfigError, InputError

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    """A module of the (not installed) benchmarks/ folder, by path."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def den(tiny_package) -> Denoiser:
    return Denoiser(tiny_package, backend="cpu", threads=1)


@pytest.fixture(scope="module")
def pair(data_dir) -> tuple[np.ndarray, np.ndarray]:
    noisy = tifffile.imread(data_dir / "noisy.tif")[:64, :64]
    clean = tifffile.imread(data_dir / "clean.tif")[:64, :64]
    return noisy, clean


def _positive(value) -> bool:
    return value is not None and math.isfinite(value) and value > 0


# ------------------------------------------------------------------ pure helpers
def test_psnr_definition():
    ref = np.array([[0.0, 10.0], [5.0, 5.0]])
    assert psnr(ref, ref) == math.inf
    assert psnr(ref + 1.0, ref) == pytest.approx(20.0)  # range 10, MSE 1
    assert psnr(ref + 1.0, ref, data_range=100.0) == pytest.approx(40.0)
    with pytest.raises(InputError):
        psnr(ref, ref[:1])


def test_samples_needed_on_synthetic_curves():
    ns = [1, 2, 4, 8, 16]
    assert samples_needed(ns, [20.0, 25.0, 28.0, 29.95, 30.0], 29.9) == 8
    assert samples_needed(ns, [30.0, 25.0, 28.0, 29.0, 30.0], 29.9) == 1  # first to reach
    assert samples_needed(ns, [20.0, 21.0, 22.0, 23.0, 24.0], 29.9) is None
    assert samples_needed([4, 1, 2], [30.0, 10.0, 30.0], 29.0) == 2  # order does not matter
    assert samples_needed(ns, [None, None, 30.0, 30.0, 30.0], 29.0) == 4
    # the definition used by quality_curve: within 0.1 dB of the last point
    curve = [30.0 - 3.0 / n for n in ns]
    assert samples_needed(ns, curve, curve[-1] - 0.1) == 16
    with pytest.raises(InputError):
        samples_needed(ns, [1.0], 0.0)


def test_quality_grid():
    grid = quality_grid(1000)
    assert grid == sorted(set(grid))
    assert grid[:16] == list(range(1, 17))
    assert {32, 64, 128, 256, 512, 768, 1000} <= set(grid) and grid[-1] == 1000
    assert quality_grid(5) == [1, 2, 3, 4, 5]
    with pytest.raises(ConfigError):
        quality_grid(0)


def test_summaries():
    s = summarize([3.0, 1.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["spread"], s["n"]) == (2.0, 1.0, 3.0, 2.0, 3)
    p = percentiles(np.arange(101.0))
    assert (p["p50"], p["p90"], p["p99"], p["n"]) == (50.0, 90.0, 99.0, 101)
    assert summarize([])["median"] is None
    assert peak_rss_mb() > 0


# ------------------------------------------------------------------ runtime harness
def test_timings_hook_records_phases_and_changes_nothing(den, pair):
    noisy, _ = pair
    timings: dict[str, float] = {}
    timed = den.denoise(noisy, n_samples=3, batch_size=2, seed=5, timings=timings)
    plain = den.denoise(noisy, n_samples=3, batch_size=2, seed=5)
    assert set(timings) == set(PHASES)
    assert all(v >= 0 for v in timings.values()) and timings["decode"] > 0
    np.testing.assert_array_equal(timed.mmse, plain.mmse)


def test_bench_runtime_report(tiny_package):
    r = bench_runtime(tiny_package, size=64, n_samples=3, batch_size=2, threads=1, repeats=2,
                      tile=32, overlap=16)
    # 64 px + the default margin (8 px) on both sides -> 80 px -> 4 x 4 tiles of 32 px
    assert r["settings"]["margin"] == 8
    assert r["tiles_per_image"] == 16
    assert all(_positive(v) for v in r["cold_start_s"].values())
    lat = r["tile_latency_s"]
    assert lat["n"] == 2 * 16 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    for key in ("wall_s", "seconds_per_sample", "megapixels_per_s", "sample_megapixels_per_s"):
        assert r[key]["n"] == 2 and all(_positive(v) for v in r[key]["values"]), key
    for sps, smps in zip(r["seconds_per_sample"]["values"], r["sample_megapixels_per_s"]["values"]):
        assert smps == pytest.approx(64 * 64 / 1e6 / sps)
    assert 0.0 <= r["latent_share"]["min"] <= r["latent_share"]["max"] <= 1.0
    assert set(r["phases_s"]) == set(PHASES)
    assert _positive(r["peak_rss_mb"])
    json.dumps(r)  # JSON-able


def test_encoder_reuse(den, pair):
    r = encoder_reuse(den, pair[0], n_samples=2, repeats=1)
    assert _positive(r["speedup"])
    assert _positive(r["encode_once"]["median"]) and _positive(r["encode_per_sample"]["median"])
    with pytest.raises(InputError):
        encoder_reuse(den, pair[0][:60, :64])


# ------------------------------------------------------------------ quality harness
@pytest.mark.parametrize("sampling", ["mc", "antithetic"])
def test_running_mmse_equals_denoise(den, pair, sampling):
    noisy = pair[0][:, :48]  # padded and cut into several tiles
    means = running_mmse(den, noisy, [1, 3], seed=7, sampling=sampling, batch_size=2,
                         tile=32, overlap=16)
    for n in (1, 3):
        expected = den.denoise(noisy, n_samples=n, seed=7, sampling=sampling, batch_size=4,
                               tile=32, overlap=16).mmse
        np.testing.assert_allclose(means[n], expected, rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(means[n], expected)  # one loop: bit for bit now


def test_running_mmse_of_a_stack_uses_per_slice_seeds(den, pair):
    noisy = pair[0][:32, :48]
    stack = np.stack([noisy, noisy])
    means = running_mmse(den, stack, [2], seed=3, tile=32, overlap=16)
    whole = den.denoise(stack, n_samples=2, seed=3, batch_size=8, tile=32, overlap=16,
                        sampling="mc")
    np.testing.assert_array_equal(means[2], whole.mmse)
    assert not np.array_equal(means[2][0], means[2][1])  # same image, independent latents


def test_quality_curve_report(den, pair):
    noisy, clean = pair
    q = quality_curve(den, noisy, clean, n_max=8, seeds=(0, 1), batch_size=4)
    assert q["grid"] == quality_grid(8)
    assert set(q["modes"]) == {"mc", "antithetic"}
    for mode in q["modes"].values():
        assert set(mode["seeds"]) == {"0", "1"}
        for seed in mode["seeds"].values():
            assert len(seed["psnr_vs_clean"]) == len(q["grid"])
            assert all(math.isfinite(v) for v in seed["psnr_vs_clean"])
            assert seed["psnr_vs_final"][-1] is None  # MMSE_n_max against itself
            assert seed["target_psnr"] == pytest.approx(seed["final_psnr"] - 0.1)
            assert seed["samples_needed"] in q["grid"]
            assert _positive(seed["seconds"])
        assert mode["summary"]["samples_needed_median"] is not None
    mp = q["mean_pass"]
    assert math.isfinite(mp["psnr_vs_clean"]) and set(mp) >= {"mc", "antithetic"}
    json.dumps(q)


# ------------------------------------------------------------------ CLI and reference
def test_cli_bench_writes_json(tiny_package, tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", str(tiny_package), "--size", "64", "--samples", "2",
                                    "--repeats", "1", "--threads", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "| seconds per sample |" in res.output
    report = json.loads(out.read_text())
    assert {"machine", "runtime"} <= set(report)
    assert _positive(report["runtime"]["seconds_per_sample"]["median"])


def test_cli_bench_with_reference(tiny_package, tiny_run, tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", str(tiny_package), "--checkpoint",
                                    str(tiny_run / "best.safetensors"), "--size", "64",
                                    "--samples", "2", "--repeats", "1", "--threads", "1",
                                    "--ref-samples", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["same_weights"] is True
    assert set(report["reference"]) == {"grad", "no_grad"}
    assert all(_positive(v) for v in report["ratios"].values())
    assert "speed-up vs reference (grad)" in res.output


def test_cli_bench_bad_model(tmp_path):
    res = CliRunner().invoke(main, ["bench", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "Error:" in res.output


def test_reference_mean_pass_matches_runtime(den, tiny_run, pair):
    from hdn_deploy.training import reference
    predictor = reference.ReferencePredictor(tiny_run / "best.safetensors", threads=1)
    noisy = pair[0]
    # the reference runs the whole image with the network's zero padding: no margin
    ours = den.denoise(noisy, sampling="mean", tile=64, overlap=0, margin=0).mmse
    np.testing.assert_allclose(predictor.mean_pass(noisy), ours, atol=1e-3)
    assert all(s > 0 for s in predictor.time_samples(noisy, 2, grad=True))


def test_quantized_package_loads(tiny_package, tmp_path, pair):
    quantize = _load("quantize")
    path = quantize.quantized_package(tiny_package, tmp_path / "int8", method="dynamic")
    result = Denoiser(path, backend="cpu", threads=1).denoise(pair[0], n_samples=2)
    assert np.isfinite(result.mmse).all()
    with pytest.raises(ConfigError):
        quantize.quantized_package(tiny_package, tmp_path / "x", method="fp4")
