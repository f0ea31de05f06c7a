"""Does the structured mode collapse, and does a recipe avoid it? Tiny synthetic task.

Synthetic "striped" data: smooth blobs and waves (0-255 range) plus Gaussian pixel noise
(sigma 20, the likelihood) plus row artefacts (a random offset, std 12, on 30 % of the
rows of each image: the structured noise HDN's unconditional levels are meant to drop).
A tiny ladder VAE (4 levels x 8 latent channels, 16 filters, 1 block, 32x32 patches) is
trained on one thread for a few hundred steps with each recipe and several seeds; the
last validation's raw KL per level (nats per patch), the output-variance ratio, the
collapse flag (hdn_deploy.training.trainer.collapse_diagnosis), and the PSNR and
row-offset std of the 8-sample MMSE on a held-out image are recorded.

    OMP_NUM_THREADS=1 python benchmarks/structured_recipe.py --out benchmarks/results/structured \\
        --recipes pixel,structured,warm --seeds 0,1,2 --steps 200

Writes ``<out>/results.json`` and ``<out>/results.md``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from hdn_deploy.training.config import ModelConfig, TrainConfig
from hdn_deploy.training.noise_models import GaussianNoiseModel
from hdn_deploy.training.noise_models.lines import LineArtefactNoiseModel, estimate_line_std
from hdn_deploy.training.trainer import train

SIGMA, ROW_STD, ROW_SHARE = 20.0, 12.0, 0.3
ARCH = dict(z_dims=(8,) * 4, n_filters=16, blocks_per_level=1, patch_size=32, dropout=0.0)

# name -> (uncond levels, TrainConfig overrides, ModelConfig overrides); a "lines" recipe
# uses the line-artefact likelihood (row offsets marginalised, their std estimated from the
# training images) instead of the Gaussian pixel likelihood
RECIPES = {
    "pixel": ((), {}, {}),
    "structured": ((0, 1), {}, {}),
    "structured-klwarm": ((0, 1), {"kl_warmup_steps": "half"}, {}),
    "warm": ((0, 1), {"structured_warmup_steps": "half"}, {}),
    "warm-klwarm": ((0, 1), {"structured_warmup_steps": "half", "kl_warmup_steps": "quarter"}, {}),
    "structured-fb4": ((0, 1), {}, {"free_bits": 4.0}),
    "structured-012": ((0, 1, 2), {}, {}),
    "lines": ((), {}, {}),
    "structured-lines": ((0, 1), {}, {}),
}


def clean_image(size: int, seed: int) -> np.ndarray:
    """Smooth blobs and waves in [20, 230] (as tests/conftest.py's synthetic_clean)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    image = 60 + 40 * np.sin(x / 11.0 + seed) * np.cos(y / 7.0)
    for _ in range(size * size // 2000):
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(5, 20)
        image += 100 * ((y - cy) ** 2 + (x - cx) ** 2 < r**2)
    return np.clip(image, 20, 230).astype(np.float32)


def striped_noisy(clean: np.ndarray, seed: int) -> np.ndarray:
    """Gaussian pixel noise plus a random offset on ROW_SHARE of the rows."""
    rng = np.random.default_rng(seed + 1000)
    rows = (rng.random(clean.shape[0]) < ROW_SHARE) * rng.normal(0, ROW_STD, clean.shape[0])
    return (clean + rows[:, None] + rng.normal(0, SIGMA, clean.shape)).astype(np.float32)


def row_offset_std(image: np.ndarray, clean: np.ndarray) -> float:
    """Std over rows of the mean error of each row (row artefact strength)."""
    return float((image - clean).mean(axis=1).std())


def psnr(image: np.ndarray, clean: np.ndarray) -> float:
    rng = float(clean.max() - clean.min())
    return float(20 * np.log10(rng) - 10 * np.log10(np.mean((image - clean) ** 2)))


def make_data(folder: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    paths = []
    for i in range(3):
        path = folder / f"train_{i}.tif"
        tifffile.imwrite(path, striped_noisy(clean_image(128, i), i))
        paths.append(path)
    clean = clean_image(128, 99)
    return paths, clean, striped_noisy(clean, 99)


def mmse(checkpoint: Path, noisy: np.ndarray, n: int = 8) -> np.ndarray:
    from hdn_deploy.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model().eval()
    norm = ckpt.normalization
    x = torch.from_numpy((noisy - norm.mean) / norm.std)[None, None].float()
    out = model.sample_posterior(x, n, torch.Generator().manual_seed(0))
    return out.mean(0)[0].numpy() * norm.std + norm.mean


def run_one(recipe: str, seed: int, steps: int, data: list[Path], clean, noisy, work: Path) -> dict:
    uncond, train_over, model_over = RECIPES[recipe]
    train_over = {k: {"half": steps // 2, "quarter": steps // 4}.get(v, v)
                  for k, v in train_over.items()}
    model_cfg = ModelConfig(**ARCH, uncond_levels=uncond, **model_over)
    train_cfg = TrainConfig(batch_size=16, lr=1e-3, optimizer="adamax", lr_schedule="cosine",
                            warmup_steps=20, max_steps=steps, steps_per_epoch=25, val_patches=32,
                            early_stop_patience=1000, seed=seed, num_threads=1, **train_over)
    start = time.perf_counter()
    noise_model = GaussianNoiseModel(SIGMA)
    if recipe.endswith("lines"):
        row_std = estimate_line_std([tifffile.imread(p) for p in data], "rows", SIGMA**2)
        noise_model = LineArtefactNoiseModel(noise_model, row_std=row_std)
    result = train(data, work / f"{recipe}_{seed}", model_config=model_cfg, train_config=train_cfg,
                   noise_model=noise_model, progress=False)
    seconds = time.perf_counter() - start
    last = result.history[-1]
    estimate = mmse(result.best_checkpoint, noisy)
    levels = model_cfg.n_levels
    return {
        "recipe": recipe, "seed": seed, "steps": steps, "seconds": round(seconds, 1),
        "kl_patch": [round(last[f"val_kl_patch_{i}"], 3) for i in range(levels)],
        "output_var_ratio": round(last["val_output_var_ratio"], 3),
        "collapse_last": int(last["collapse"]),
        "collapse_any_after_half": int(any(r["collapse"] for r in result.history
                                           if r["step"] > steps // 2)),
        "val_loss": round(last["val_loss"], 4),
        "psnr_mmse": round(psnr(estimate, clean), 2),
        "psnr_noisy": round(psnr(noisy, clean), 2),
        "row_std_mmse": round(row_offset_std(estimate, clean), 2),
        "row_std_noisy": round(row_offset_std(noisy, clean), 2),
    }


def table(rows: list[dict]) -> str:
    head = ("| recipe | steps | seed | KL per level (nats/patch, 0 finest) | output var ratio | collapse "
            "(last / any after half) | MMSE PSNR (noisy) | row-offset std MMSE (noisy) | s |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['recipe']} | {r['steps']} | {r['seed']} | {', '.join(map(str, r['kl_patch']))} | "
        f"{r['output_var_ratio']} | {r['collapse_last']} / {r['collapse_any_after_half']} | "
        f"{r['psnr_mmse']} ({r['psnr_noisy']}) | {r['row_std_mmse']} ({r['row_std_noisy']}) | "
        f"{r['seconds']} |\n" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recipes", default="pixel,structured,warm")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    rows = json.loads(results_path.read_text())["runs"] if results_path.is_file() else []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, clean, noisy = make_data(work)
        for recipe in args.recipes.split(","):
            for seed in map(int, args.seeds.split(",")):
                row = run_one(recipe, seed, args.steps, data, clean, noisy, work)
                print(json.dumps(row), flush=True)
                rows = [r for r in rows if (r["recipe"], r["seed"], r["steps"]) !=
                        (recipe, seed, args.steps)] + [row]
                results_path.write_text(json.dumps({"arch": {k: list(v) if isinstance(v, tuple)
                                                             else v for k, v in ARCH.items()},
                                                    "sigma": SIGMA, "row_std": ROW_STD,
                                                    "row_share": ROW_SHARE, "runs": rows}, indent=1))
    (args.out / "results.md").write_text(table(rows))


if __name__ == "__main__":
    main()
