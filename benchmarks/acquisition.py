"""Acquisition latency: a simulated camera through ``Denoiser.stream`` and ``hdn-deploy watch``.

A camera makes uint16 frames (the held-out IHC quadrant tiled to the frame size, with the
bundled model's Poisson-Gaussian noise) at a given rate, denoised with the bundled model on
the CPU (2 threads) by one of two paths:

- ``stream``: ``Denoiser.stream`` (``max_queue`` 2, block when full) in the camera's process;
  latency = frame handed over -> result out.
- ``watch``: the camera writes each frame as a TIFF (in place, in 4 pieces, as acquisition
  software does) into a folder followed by ``hdn-deploy watch`` (``--settle 0.5``, file
  events); latency = last byte written -> MMSE and std files in the output folder (this
  includes the settle time, the file reading and the atomic writes). Peak RSS is that of the
  watch process, sampled every 50 ms.

Each configuration runs in its own process, twice: first with the camera as fast as it can
go (the sustained frames/s is then the processing rate: frames after the first / time
between the first and last result), then paced at 80 % of that rate (per-frame latency
p50/p99, queued frames). With 4 frames per run, p99 is the maximum.

    python benchmarks/acquisition.py --paths stream watch --sizes 512 --frames 4 \
        --out benchmarks/results/acquisition

Writes ``acquisition.json`` and ``acquisition.md`` in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hdn_deploy.atomic import atomic_write_text  # noqa: E402

CONFIGS = {
    "mc, 1 sample": dict(n_samples=1, sampling="mc"),
    "antithetic, 2 samples": dict(n_samples=2, sampling="antithetic"),
    "antithetic, 8 samples": dict(n_samples=8, sampling="antithetic"),
    "adaptive, 0.05sigma, cap 8": dict(n_samples=8, sampling="antithetic", tolerance="0.05sigma"),
}


def _frames(size: int, count: int, rate: float | None):
    from benchmarks.quality import add_noise
    from hdn_deploy.demo import SAMPLE_CLEAN, bundled_path
    from hdn_deploy.io import read_image

    clean = read_image(bundled_path(SAMPLE_CLEAN)).array.astype(np.float32)
    reps = -(-size // clean.shape[0])
    big = np.tile(clean, (reps, reps))[:size, :size]
    for i in range(count):
        start = time.monotonic()
        yield np.clip(add_noise(big, "pg", i), 0, 65535).astype(np.uint16)
        if rate:
            time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - start)))


def one_run(size: int, config: str, count: int, rate: float | None, package: str) -> dict[str, Any]:
    from hdn_deploy import Denoiser

    den = Denoiser(package, backend="cpu", threads=2)
    den.denoise(next(_frames(size, 1, None)), n_samples=1)  # warm-up: sessions, allocations
    out = list(den.stream(_frames(size, count, rate), max_queue=2, **CONFIGS[config]))
    lat = [r.latency_s for r in out]
    span = out[-1].done - out[0].done
    used = [r.result.metadata["samples_used_mean"] for r in out]
    return {"path": "stream", "size": size, "config": config, "frames": count, "camera_fps": rate,
            "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
            "latency_p99_s": round(float(np.percentile(lat, 99)), 3),
            "sustained_fps": round((count - 1) / span, 4) if span > 0 else None,
            "max_queued": max(r.queued for r in out), "dropped": out[-1].dropped,
            "samples_used_mean": round(float(np.mean(used)), 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _write_in_pieces(path: Path, frame: np.ndarray, pieces: int = 4) -> float:
    """Write ``frame`` as a TIFF in ``pieces`` flushed chunks; returns the time of the last byte."""
    import io

    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, frame)
    data = buffer.getvalue()
    step = -(-len(data) // pieces)
    with open(path, "wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start:start + step])
            handle.flush()
            time.sleep(0.02)
    return time.monotonic()


def watch_run(size: int, config: str, count: int, rate: float | None,
              package: str) -> dict[str, Any]:
    """Frames written into a folder followed by ``hdn-deploy watch`` (a separate process)."""
    import tempfile

    import psutil

    opts = CONFIGS[config]
    flags = ["--n-samples", str(opts["n_samples"]), "--sampling", opts["sampling"]]
    flags += ["--tolerance", opts["tolerance"]] if "tolerance" in opts else []
    with tempfile.TemporaryDirectory() as tmp:
        in_dir, out_dir = Path(tmp, "in"), Path(tmp, "out")
        in_dir.mkdir()
        cmd = [sys.executable, "-m", "hdn_deploy", "watch", str(in_dir), "-m", package, "-o",
               str(out_dir), "--threads", "2", "--settle", "0.5", "--interval", "0.05",
               "--quiet", *flags]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        watcher = psutil.Process(proc.pid)
        peak = [0]

        def wait_for(names: list[str], written: dict[str, float]) -> dict[str, float]:
            seen: dict[str, float] = {}
            queued = 0
            while len(seen) < len(names):
                if proc.poll() is not None:
                    raise RuntimeError(f"watch exited early: {proc.stderr.read()}")
                now = time.monotonic()
                for name in names:
                    if name not in seen and (out_dir / f"{name}_std.tif").is_file() \
                            and (out_dir / f"{name}_mmse.tif").is_file():
                        seen[name] = now
                queued = max(queued, sum(1 for n in written if n not in seen) - 1)
                peak[0] = max(peak[0], watcher.memory_info().rss)
                time.sleep(0.05)
            seen["_max_queued"] = max(queued, 0)
            return seen

        frames = list(_frames(size, count + 1, None))
        written = {"warmup": _write_in_pieces(in_dir / "warmup.tif", frames[0])}
        wait_for(["warmup"], written)  # model loaded, sessions warm
        written.clear()
        names = [f"frame_{i:03d}" for i in range(count)]
        import threading

        def camera() -> None:
            for name, frame in zip(names, frames[1:]):
                start = time.monotonic()
                written[name] = _write_in_pieces(in_dir / f"{name}.tif", frame)
                if rate:
                    time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - start)))

        thread = threading.Thread(target=camera)
        thread.start()
        done = wait_for(names, written)
        thread.join()
        proc.terminate()
        proc.wait(timeout=60)
    lat = [done[n] - written[n] for n in names]
    span = done[names[-1]] - done[names[0]]
    return {"path": "watch", "size": size, "config": config, "frames": count, "camera_fps": rate,
            "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
            "latency_p99_s": round(float(np.percentile(lat, 99)), 3),
            "sustained_fps": round((count - 1) / span, 4) if span > 0 else None,
            "max_queued": done["_max_queued"], "dropped": 0, "samples_used_mean": None,
            "peak_rss_mb": round(peak[0] / 2**20, 1)}


def _child(args, path: str, size: int, config: str, rate: float | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", path, str(size), config, "--frames",
           str(args.frames), "--package", args.package] + (["--rate", str(rate)] if rate else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _or_na(value: Any) -> Any:
    return "n/a" if value is None else value


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = ["# Acquisition latency (bundled model, CPU, 2 threads)", "",
             f"Command: `{command}`", "",
             "| path | frame | configuration | camera fps | sustained fps | latency p50 (s) "
             "| p99 (s) | max queued | dropped | samples used | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fps = "max" if not r["camera_fps"] else f"{r['camera_fps']:.4f}"
        lines.append(f"| {r['path']} | {r['size']}^2 | {r['config']} | {fps} | {r['sustained_fps']} | "
                     f"{r['latency_p50_s']} | {r['latency_p99_s']} | {r['max_queued']} | "
                     f"{r['dropped']} | {_or_na(r['samples_used_mean'])} | {r['peak_rss_mb']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=3, metavar=("PATH", "SIZE", "CONFIG"))
    parser.add_argument("--paths", nargs="+", choices=["stream", "watch"], default=["stream"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--package", default="hdn_deploy/models/default")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/acquisition"))
    args = parser.parse_args()
    if args.one:
        run = one_run if args.one[0] == "stream" else watch_run
        print(json.dumps(run(int(args.one[1]), args.one[2], args.frames, args.rate, args.package)))
        return
    rows = []
    for size in args.sizes:
        for config in args.configs:
            for path in args.paths:
                fast = _child(args, path, size, config, None)
                paced = _child(args, path, size, config, round(0.8 * fast["sustained_fps"], 4))
                rows += [fast, paced]
                print(json.dumps(fast), json.dumps(paced), flush=True)
    command = "python " + shlex.join(sys.argv)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "acquisition.json",
                      json.dumps({"command": command, "runs": rows}, indent=1))
    atomic_write_text(args.out / "acquisition.md", markdown(rows, command))
    print(markdown(rows, command))


if __name__ == "__main__":
    main()
