"""Markdown table and PNG plot of a ``run_cpu_suite.py`` results dictionary."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["markdown_report", "plot_quality_vs_time"]


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:.{digits}g}"


def _s(stats: dict[str, Any] | None, digits: int = 3) -> str:
    """median [min, max]."""
    if not stats or stats.get("median") is None:
        return "n/a"
    return f"{_f(stats['median'], digits)} [{_f(stats['min'], digits)}, {_f(stats['max'], digits)}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _headline(r: dict[str, Any]) -> list[str]:
    sp, ttq, q = r["speed"], r["time_to_quality"], r["quality"]
    size = "x".join(map(str, sp["image_shape"]))
    tol = q["tolerance_db"]
    rows = []
    names = [("reference_grad", "reference: PyTorch, full pass/sample, batch 1, grad", "grad"),
             ("reference_no_grad", "reference, no_grad", "no_grad"),
             ("hdn_deploy_mc", f"hdn-deploy, mc (batch {sp['batch_size']})", "mc"),
             ("hdn_deploy_antithetic", f"hdn-deploy, antithetic (batch {sp['batch_size']})",
              "antithetic")]
    for key, label, speed_key in names:
        row = ttq[key]
        rows.append([label, _s(sp[speed_key]["seconds_per_sample"]), _f(row["samples_needed"]),
                     _f(row["seconds"]), _f(row["speedup_vs_reference_grad"]) + "x"
                     if row["speedup_vs_reference_grad"] else "n/a"])
    mean = ttq["hdn_deploy_mean_pass"]
    rows.append([f"hdn-deploy, one pass with eps = 0 (PSNR gap to the {q['n_max']}-sample "
                 f"MMSE: {_f(mean['gap_db'])} dB)", _s(sp["mean"]["seconds"]), "1 pass",
                 _f(mean["seconds"]), "-"])
    lines = [f"## Reference vs hdn-deploy at {size} ({r['speed']['threads']} threads)", "",
             f"Seconds per sample: median [min, max] over {sp['repeats']} interleaved repeats. "
             f"Samples needed: smallest N whose MMSE is within {tol} dB (PSNR vs clean) of the "
             f"{q['n_max']}-sample MMSE on the {q['shape'][0]}x{q['shape'][1]} crop (median over "
             f"seeds {q['seeds']}); the reference draws plain Monte Carlo samples. Time to quality: "
             "reference = N x s/sample; hdn-deploy = fixed cost per call (encoder, tiling, merge) "
             "+ N x marginal s/sample, both measured at this size.", ""]
    lines += _table(["algorithm", "s/sample", f"samples needed (within {tol} dB)",
                     f"time to within {tol} dB, s", "speed-up vs reference"], rows)
    return lines


def _quality(q: dict[str, Any]) -> list[str]:
    grid = q["grid"]
    modes = list(q["modes"])
    show = [i for i, n in enumerate(grid) if n in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
            or n == grid[-1]]
    header = ["N"] + [f"{m}: PSNR vs clean" for m in modes] + [f"{m}: PSNR vs MMSE_{q['n_max']}"
                                                                 for m in modes]
    rows = []
    for i in show:
        row = [str(grid[i])]
        row += [_f(q["modes"][m]["summary"]["psnr_vs_clean_mean"][i], 5) for m in modes]
        for m in modes:
            vals = [s["psnr_vs_final"][i] for s in q["modes"][m]["seeds"].values()]
            vals = [v for v in vals if v is not None]
            row.append(_f(float(np.mean(vals)), 4) if vals else "-")
        rows.append(row)
    lines = [f"## Quality per sample ({q['shape'][0]}x{q['shape'][1]} crop, mean over seeds "
             f"{q['seeds']})", "", f"Noisy input: {_f(q['psnr_noisy'], 4)} dB.", ""]
    lines += _table(header, rows)
    lines.append("")
    for m in modes:
        s = q["modes"][m]["summary"]
        lines.append(f"- {m}: final PSNR {_s(s['final_psnr'], 5)} dB; samples needed per seed "
                     f"{s['samples_needed_per_seed']} (median {_f(s['samples_needed_median'])}; "
                     f"of the seed-mean curve {_f(s['samples_needed_of_mean_curve'])}); "
                     f"{q['n_max']} samples took {_s(s['seconds'])} s")
    mp = q.get("mean_pass")
    if mp:
        parts = [f"{m}: PSNR gap to its {q['n_max']}-sample MMSE {_f(mp[m]['gap_db'], 3)} dB, "
                 f"PSNR vs that MMSE {_f(mp[m]['psnr_vs_mmse_n_max'], 4)} dB, worth "
                 f"{_f(mp[m]['equivalent_samples'])} samples" for m in modes if m in mp]
        lines.append(f"- one pass with eps = 0 (sampling='mean'): {_f(mp['psnr_vs_clean'], 5)} dB "
                     f"vs clean; " + "; ".join(parts))
    return lines


def _tuning(t: dict[str, Any]) -> list[str]:
    rows = [[name, _s(c["seconds_per_sample"]), f"{c['gain_vs_baseline']:.2f}x",
             _s(c["latent_share"], 2)] for name, c in t["configs"].items()]
    base = t["configs"]["baseline"]["config"]
    lines = [f"## Tuning sweeps (one {t['image_shape'][0]}x{t['image_shape'][1]} tile, "
             f"{t['n_samples']} samples, {t['repeats']} interleaved repeats)", "",
             f"Baseline: {base}. Gain = baseline median / config median s/sample.", ""]
    lines += _table(["config", "s/sample", "gain", "latent share"], rows)
    e = t.get("encoder_reuse")
    if e:
        lines += ["", f"- encoder once per call: {_s(e['encode_once'])} s/sample vs encoder + "
                  f"decoder per sample {_s(e['encode_per_sample'])} s/sample (batch 1): "
                  f"{e['speedup']:.2f}x; one encoder call {_s(e['encode_s'])} s, one decoder call "
                  f"{_s(e['decode_s'])} s"]
    for method, entry in (t.get("int8") or {}).items():
        if "error" in entry:
            lines.append(f"- int8 {method}: not possible here: {entry['error'][:300]}")
        elif "loss_db" in entry:
            verdict = ("worth it" if entry["accepted"]
                       else "not worth it (needs <= 0.1 dB loss and >= 1.1x speed)")
            lines.append(
                f"- int8 {method} (decoder): {entry['speedup']:.2f}x speed, MMSE "
                f"{_f(entry['int8_psnr'], 5)} vs {_f(entry['float_psnr'], 5)} dB float "
                f"({entry['n_samples']} samples, same seed): loss {entry['loss_db']:.3f} dB, "
                f"PSNR vs the float MMSE {_f(entry['psnr_vs_float_mmse'], 4)} dB -> {verdict}")
    return lines


def _cold(r: dict[str, Any]) -> list[str]:
    rows = []
    for name, entry in r["cold_start"].items():
        cs = entry.get("cold_start_s", {})
        rows.append([name, _f(entry["process_wall_s"]),
                     _f(cs.get("total")) if cs else "-", _f(entry["peak_rss_mb"], 4)])
    lines = ["## Cold start and memory (fresh processes)", "",
             "Process wall time includes imports and the run itself; cold start = load package "
             "+ create sessions + first call.", ""]
    return lines + _table(["process", "process wall, s", "cold start, s", "peak RSS, MB"], rows)


def markdown_report(r: dict[str, Any]) -> str:
    """The results as Markdown: headline table, quality, tuning, cold start, notes."""
    m = r["machine"]
    sp = r["speed"]
    same = sp["same_weights"]
    lines = ["# hdn-deploy CPU benchmark", "",
             f"Machine: {m['cpu_model']}, {m['cpus_usable']} usable CPUs, {m['platform']}, "
             f"memory {_f(m.get('memory_mb', {}).get('MemTotal'), 4)} MB total, "
             f"{_f(m.get('memory_mb', {}).get('MemAvailable'), 4)} MB available; "
             f"load average at start {m['load_average']}, at end {r.get('load_average_end')}. "
             f"Versions: {m['versions']}. Suite time {_f(r.get('suite_seconds'), 4)} s.", ""]
    if r.get("warning"):
        lines += [f"**Warning: {r['warning']}.**", ""]
    lines += _headline(r) + [""] + _quality(r["quality"]) + [""] + _tuning(r["tuning"])
    lines += [""] + _cold(r) + ["", "## Notes", "",
              f"- same weights: checkpoint and package hashes match: {same['hashes_match']}; the "
              f"eps = 0 pass of both differs by at most {_f(same['mean_pass_max_abs_diff'])} "
              f"(relative {_f(same['mean_pass_rel_diff'])})",
              f"- tiles at {sp['image_shape'][0]}x{sp['image_shape'][1]}: tile {sp['tile']}, "
              f"overlap {sp['overlap']}; pixels processed / image pixels by tile size: "
              f"{ {k: round(v, 3) for k, v in sp['tiling_overhead'].items()} }",
              f"- latent generation share at the target size: mc "
              f"{_s(sp['mc']['latent_share'], 2)}, antithetic {_s(sp['antithetic']['latent_share'], 2)}",
              ""]
    return "\n".join(lines)


def plot_quality_vs_time(r: dict[str, Any], path: str | Path) -> Path:
    """PSNR vs seconds at the target size (left) and convergence vs N (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q, ttq = r["quality"], r["time_to_quality"]
    grid = np.asarray(q["grid"], dtype=float)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    curves = [("reference (PyTorch, grad)", "mc", None, ttq["reference_grad"]["seconds_per_sample"]),
              ("hdn-deploy mc", "mc", ttq["hdn_deploy_mc"], None),
              ("hdn-deploy antithetic", "antithetic", ttq["hdn_deploy_antithetic"], None)]
    for label, mode, row, per_sample in curves:
        if mode not in q["modes"]:
            continue
        seconds = grid * per_sample if per_sample else (
            row["fixed_s_per_call"] + grid * row["marginal_s_per_sample"])
        ax.plot(seconds, q["modes"][mode]["summary"]["psnr_vs_clean_mean"], marker=".", label=label)
    target = q["modes"]["mc"]["summary"]["final_psnr"]["median"] - q["tolerance_db"]
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"{q['tolerance_db']} dB below MMSE_{q['n_max']}")
    if q.get("mean_pass"):
        ax.plot([ttq["hdn_deploy_mean_pass"]["seconds"]], [q["mean_pass"]["psnr_vs_clean"]],
                "k*", ms=10, label="hdn-deploy, one pass eps = 0")
    size = "x".join(map(str, r["speed"]["image_shape"]))
    ax.set(xscale="log", xlabel=f"seconds per {size} image", ylabel="PSNR of the MMSE vs clean (dB)",
           title="Quality vs time")
    ax.legend(fontsize=8)
    for mode, data in q["modes"].items():
        for seed, s in data["seeds"].items():
            vals = np.array([np.nan if v is None else v for v in s["psnr_vs_final"]], dtype=float)
            ax2.plot(grid, vals, marker=".", label=f"{mode} seed {seed}")
    ax2.set(xscale="log", xlabel="samples N", ylabel=f"PSNR(MMSE_N, MMSE_{q['n_max']}) (dB)",
            title="Convergence to the many-sample MMSE")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
