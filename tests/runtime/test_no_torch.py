"""The runtime and its CLI work where torch cannot be imported, and never import it."""
from __future__ import annotations

import textwrap

from conftest import run_without_torch

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np
    import tifffile
    from click.testing import CliRunner

    import hdn_deploy
    from hdn_deploy.denoiser import Denoiser
    from hdn_deploy.cli.main import main

    package, work = sys.argv[1], Path(sys.argv[2])
    image = np.random.default_rng(0).normal(100, 20, (24, 40)).astype(np.float32)
    result = Denoiser(package, backend="cpu", threads=1).denoise(image, n_samples=2, seed=1)
    assert result.mmse.shape == (24, 40) and np.isfinite(result.mmse).all()

    runner = CliRunner()
    res = runner.invoke(main, ["info", package])
    assert res.exit_code == 0, res.output
    assert result.metadata["model_sha256"] in res.output

    tifffile.imwrite(work / "img.tif", image)
    res = runner.invoke(main, ["denoise", str(work / "img.tif"), "-m", package, "-o",
                               str(work / "out"), "--samples", "2", "--backend", "cpu",
                               "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    assert (work / "out" / "img_mmse.tif").is_file()

    for command, extra in (("train", "train"), ("export", "export")):
        args = [command] if command == "train" else [command, "ckpt.safetensors", "-o", "x"]
        res = runner.invoke(main, args)
        assert res.exit_code != 0, res.output
        assert f"pip install 'hdn-deploy[{extra}]'" in res.output, res.output

    loaded = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
    assert not loaded, loaded
    print("NO-TORCH-OK")
    """
)


def test_runtime_and_cli_without_torch(tiny_package, tmp_path):
    proc = run_without_torch(SCRIPT, str(tiny_package), str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NO-TORCH-OK" in proc.stdout
