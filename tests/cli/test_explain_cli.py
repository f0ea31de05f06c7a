"""`hdn-deploy explain` (files of the right shapes, labelled planes, deterministic by seed,
the library's numbers) and `denoise --mean-levels`."""
from __future__ import annotations

import numpy as np
import tifffile
from click.testing import CliRunner

from hdn_deploy.cli.main import main
from hdn_deploy.denoiser import Denoiser
from hdn_deploy.io import read_hdn_metadata

FAST = ["--n-samples", "2", "--backend", "cpu", "--threads", "1", "--quiet"]


def _explain(package, image, out, *extra):
    result = CliRunner().invoke(main, ["explain", str(image), "-m", str(package), "-o", str(out),
                                       *FAST, *map(str, extra)])
    return result


def test_explain_writes_labelled_stack_and_montage(tiny_package, data_dir, tmp_path):
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, tifffile.imread(data_dir / "noisy.tif")[:48, :80])
    runs = [_explain(tiny_package, image, tmp_path / name, "--seed", seed)
            for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    for run in runs:
        assert run.exit_code == 0, run.output
    assert "level 0:" in runs[0].output
    with tifffile.TiffFile(tmp_path / "a" / "img_explain.tif") as f:
        stack, labels = f.asarray(), f.imagej_metadata["Labels"]
    n = len(Denoiser(tiny_package).package.sampled_levels)
    assert stack.shape == (2 * n + 2, 48, 80) and stack.dtype == np.float32
    assert labels[0] == "input" and labels[-1] == f"std, level {n - 1} alone"
    assert (tmp_path / "a" / "img_explain.png").stat().st_size > 1000
    meta = read_hdn_metadata(tmp_path / "a" / "img_explain.tif")
    assert meta["seed"] == 1 and meta["explain"]["planes"] == labels
    assert np.array_equal(stack, tifffile.imread(tmp_path / "b" / "img_explain.tif"))
    assert not np.array_equal(stack, tifffile.imread(tmp_path / "c" / "img_explain.tif"))
    # the same numbers as the library call with the same keywords
    lib = Denoiser(tiny_package, backend="cpu", threads=1).explain(
        tifffile.imread(image), n_samples=2, seed=1)
    assert np.array_equal(stack, lib.stack())


def test_explain_stack_needs_a_plane(tiny_package, data_dir, tmp_path):
    image = tmp_path / "stack.tif"
    plane = tifffile.imread(data_dir / "noisy.tif")[:32, :32]
    tifffile.imwrite(image, np.stack([plane, plane + 1]), imagej=True, metadata={"axes": "ZYX"})
    refused = _explain(tiny_package, image, tmp_path / "out")
    assert refused.exit_code == 2 and "--plane" in refused.output
    assert not (tmp_path / "out").exists()
    chosen = _explain(tiny_package, image, tmp_path / "out", "--plane", 1)
    assert chosen.exit_code == 0, chosen.output
    assert np.array_equal(tifffile.imread(tmp_path / "out" / "stack_explain.tif")[0], plane + 1)


def test_denoise_mean_levels_flag(tiny_package, data_dir, tmp_path):
    image = tmp_path / "in" / "img.tif"
    image.parent.mkdir()
    array = tifffile.imread(data_dir / "noisy.tif")[:40, :56]
    tifffile.imwrite(image, array)
    args = ["denoise", str(image), "-m", str(tiny_package), "-o", str(tmp_path / "out"),
            "--n-samples", "4", "--threads", "1", "--quiet", "--backend", "cpu"]
    result = CliRunner().invoke(main, [*args, "--mean-levels", "0,1"])
    assert result.exit_code == 0, result.output
    mmse = tifffile.imread(tmp_path / "out" / "img_mmse.tif")
    lib = Denoiser(tiny_package, backend="cpu", threads=1).denoise(
        array, n_samples=4, mean_levels=[0, 1])
    assert np.array_equal(mmse, lib.mmse)
    meta = read_hdn_metadata(tmp_path / "out" / "img_mmse.tif")
    assert meta["mean_levels"] == [0, 1] and meta["settings"]["mean_levels"] == [0, 1]
    again = CliRunner().invoke(main, [*args, "--mean-levels", "0,1"])
    assert "skipped 1" in again.output  # resumable with the same settings
    other = CliRunner().invoke(main, args)  # different settings: recomputed
    assert "denoised 1" in other.output
    bad = CliRunner().invoke(main, [*args, "--mean-levels", "0,x"])
    assert bad.exit_code == 2 and "level indices" in bad.output


def test_explain_flags_are_the_library_keywords():
    import inspect

    keywords = {name for name, p in inspect.signature(Denoiser.explain).parameters.items()
                if p.kind is p.KEYWORD_ONLY} - {"on_progress"}
    cli_only = {"image", "model", "out_dir", "plane", "axes", "backend", "threads", "quiet"}
    params = {p.name for p in main.commands["explain"].params} - cli_only
    assert params == keywords
