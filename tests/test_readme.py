"""Every command in README.md runs (on tiny data and a tiny model), so the README cannot rot.

Code blocks preceded by ``<!-- readme-test: NAME -->`` are extracted and run in order in a
scratch folder laid out as the README assumes. Training and sampling sizes are shrunk by
appending overrides (click keeps the last value of a repeated option); the command lines
themselves are exactly the README's.
"""
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from conftest import noisy, synthetic_clean
from hdn_deploy.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"
TINY_TRAIN = ["--levels", "3", "--latent-channels", "4", "--filters", "8", "--blocks", "1",
              "--patch-size", "32", "--batch-size", "4", "--steps-per-epoch", "2",
              "--val-patches", "4", "--max-steps", "2", "--quiet"]
OVERRIDES = {
    "noise-model": ["--iterations", "5", "--batch-size", "2000", "--quiet"],
    "train": TINY_TRAIN,
    "resume": ["--max-steps", "4", "--quiet"],
    "denoise": ["--n-samples", "2", "--quiet"],
    "explain": ["--n-samples", "2", "--quiet"],
    "watch": ["--n-samples", "4", "--quiet", "--settle", "0"],
    "bench": ["--size", "64", "--n-samples", "2", "--repeats", "1", "--ref-samples", "1"],
    "distill": ["--steps", "2", "--batch-size", "2", "--patch-size", "32", "--channels", "4",
                "--depth", "2", "--val-patches", "2", "--val-samples", "2", "--validate-every",
                "1", "--quiet"],
}


def readme_blocks(name: str) -> list[str]:
    text = README.read_text()
    pattern = rf"<!-- readme-test: {name} -->\s*```\w*\n(.*?)```"
    return re.findall(pattern, text, flags=re.S)


def readme_commands(name: str) -> list[list[str]]:
    lines = [ln.strip() for block in readme_blocks(name) for ln in block.splitlines()]
    return [shlex.split(ln) for ln in lines if ln and not ln.startswith("#")]


def _overrides(argv: list[str]) -> list[str]:
    if argv[0] == "train":
        return OVERRIDES["resume"] if "--resume" in argv else OVERRIDES["train"]
    if argv[0] == "export" and "--int8" in argv:  # a 2-step model: its int8 loss is random
        return ["--int8-max-loss-db", "100"]
    return OVERRIDES.get(argv[0], [])


@pytest.fixture
def readme_folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    clean = synthetic_clean(96, 96)
    stack = np.stack([clean + rng.normal(0, 10, clean.shape) for _ in range(8)]).astype(np.float32)
    tifffile.imwrite(tmp_path / "calibration_stack.tif", stack)
    (tmp_path / "noisy_images").mkdir()
    for i in range(2):
        tifffile.imwrite(tmp_path / "noisy_images" / f"img_{i:03d}.tif", noisy(clean, 10, seed=i))
    tifffile.imwrite(tmp_path / "first_estimate.tif", clean)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_has_the_tested_blocks():
    commands = readme_commands("walkthrough")
    assert len(commands) >= 9
    assert all(c[0] == "hdn-deploy" for c in commands)
    assert len(readme_blocks("api")) == 1 and len(readme_commands("bench")) == 1
    assert README.read_text().splitlines()[0] == "# hdn-deploy"
    assert "make demo" in README.read_text()[:1500] and "make test" in README.read_text()[:1500]


@pytest.mark.slow
def test_readme_walkthrough_api_and_bench_run(readme_folder):
    runner = CliRunner()
    for argv in readme_commands("walkthrough") + readme_commands("bench"):
        args = argv[1:] + _overrides(argv[1:])
        result = runner.invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, f"{' '.join(argv)}\n{result.output}"
    assert (readme_folder / "denoised" / "img_000_mmse.tif").is_file()
    assert (readme_folder / "denoised" / "img_001_samples.tif").is_file()
    assert (readme_folder / "denoised_fast" / "img_001_std.tif").is_file()
    assert (readme_folder / "denoised_live" / "img_001_mmse.tif").is_file()
    assert (readme_folder / "my_model_fast" / "direct.onnx").is_file()
    assert (readme_folder / "denoised_direct" / "img_001_mmse.tif").is_file()
    assert not (readme_folder / "denoised_direct" / "img_001_std.tif").exists()
    assert (readme_folder / "bench.json").is_file()
    assert (readme_folder / "explained" / "img_000_explain.tif").is_file()
    assert (readme_folder / "explained" / "img_000_explain.png").is_file()
    assert (readme_folder / "denoised_level0_at_mean" / "img_001_mmse.tif").is_file()
    (code,) = readme_blocks("api")
    namespace: dict = {}
    exec(compile(code, "README.md:api", "exec"), namespace)
    assert namespace["mmse"].shape == (96, 96) and namespace["samples"].shape == (2, 96, 96)
    assert namespace["explanation"].stack().shape[1:] == (96, 96)
    assert (readme_folder / "explained_api" / "img_000_explain.png").is_file()


@pytest.mark.slow
def test_readme_gpu_commands_parse_and_fail_cleanly_without_tensorrt(readme_folder, tiny_package):
    """No GPU/TensorRT on CI: the commands must parse and end with the install hint."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed: the GPU tests cover these commands")
    (readme_folder / "my_model").symlink_to(tiny_package)
    for argv in readme_commands("gpu"):
        result = CliRunner().invoke(main, argv[1:])
        assert result.exit_code == 2, result.output
        assert "hdn-deploy[tensorrt]" in result.output, result.output
