"""Benchmark: peak memory and speed of streaming prediction on a short and a 10x longer video.

    python benchmarks/predict_memory.py [--seconds 60,600] [--quick]

Writes synthetic 25 fps videos (OpenCV VideoWriter, mp4v, 160x120) of a real face (scikit-image's
astronaut, so OpenCV's Haar detector finds it) drifting a few pixels per frame, one per length
in --seconds (default 1 minute and 10 minutes; --quick: 5 s and 20 s), and runs on each, as a
user would, in its own process:

    python -m fer_jax.predict --model mini_xception_fer VIDEO --out TMP

The command's peak resident memory is the child's ru_maxrss from wait4 (the kernel's high-water
mark for that process alone, interpreter, JAX, OpenCV and the model included), and its wall time
gives video-seconds per second. Streaming prediction (fer_jax.video.windows.WindowStream) keeps memory
independent of the video's length: the target is peak(longest) / peak(shortest) <= 1.5x. The
longest video's JSON is checked to cover the whole video (windows to its last frame). Output: a
Markdown table on stdout with the CPU model, AVX-512 and the load averages, and JSON in
benchmarks/results/predict_memory_<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # machine.py, also when this file is imported by tests
import machine  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
FPS = 25
W, H = 160, 120


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)


def write_video(path: str, seconds: float, fps: int = FPS) -> int:
    """A W x H mp4v video of the astronaut's face drifting a few pixels (and blinking brightness); returns frames."""
    import cv2
    from skimage import data

    img = data.astronaut()  # 512 x 512 RGB, the face near the top centre
    face = cv2.resize(img[0:300, 60:460], (W + 24, H + 18), interpolation=cv2.INTER_AREA)  # 400x300 -> a bit over W x H
    face = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (W, H))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with mp4v")
    n = int(round(seconds * fps))
    for i in range(n):
        dx = int(round(12 + 10 * np.sin(i / 9.0)))
        dy = int(round(9 + 7 * np.cos(i / 13.0)))
        frame = face[dy:dy + H, dx:dx + W]
        if i % 50 < 3:  # a little change in brightness now and then
            frame = cv2.convertScaleAbs(frame, alpha=1.0, beta=12)
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return n


def run_predict(video: str, out_dir: str, timeout: float) -> dict:
    """`python -m fer_jax.predict --model mini_xception_fer VIDEO --out DIR` in its own process: wall, peak RSS, rc."""
    cmd = [sys.executable, "-m", "fer_jax.predict", "--model", "mini_xception_fer", video, "--out", out_dir]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.extend(iter(lambda: proc.stdout.read(65536), b"")), daemon=True)
    reader.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: ru_maxrss is its peak RSS in KiB
    wall = time.perf_counter() - t0
    killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(10)
    proc.stdout.close()
    text = b"".join(output).decode(errors="replace").replace("\r", "\n")
    res = {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "rc": proc.returncode, "tail": text[-1500:]}
    if proc.returncode:
        res["error"] = f"exit {proc.returncode}: " + (text.strip().splitlines() or ["?"])[-1][:300]
    return res


def coverage(out_dir: str, video: str) -> dict:
    """Windows in the JSON, how many have probabilities, and the last frame they cover."""
    path = Path(out_dir) / (Path(video).stem + "_emotions.json")
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    windows = data.get("windows", [])
    ends = [w.get("end_frame", w.get("end", 0)) for w in windows if isinstance(w, dict)]
    faces = [w for w in windows if isinstance(w, dict) and not w.get("no_face", False)]
    return {"windows": len(windows), "windows_with_face": len(faces), "last_frame": max(ends) if ends else None}


def markdown(r: dict) -> str:
    m = r["meta"]
    lines = [f"Streaming predict (`python -m fer_jax.predict --model mini_xception_fer VIDEO`), {W}x{H} mp4v at {FPS} fps, "
             "each command in its own process. " + machine.describe(m), "",
             "| video | frames | peak RSS | vs shortest | wall | video-s per s | windows (with a face) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    base = r["runs"][0].get("peak_rss_mb") if r["runs"] and "error" not in r["runs"][0] else None
    for x in r["runs"]:
        if "error" in x:
            lines.append(f"| {x['seconds']:g} s | {x['frames']:,} | not measured: {x['error']} | - | - | - | - |")
            continue
        ratio = f"{x['peak_rss_mb'] / base:.2f}x" if base else "-"
        cov = x.get("coverage", {})
        lines.append(f"| {x['seconds']:g} s | {x['frames']:,} | {x['peak_rss_mb']:,.0f} MB | {ratio} | {x['wall_s']:.1f} s | "
                     f"{x['video_s_per_s']:.1f} | {cov.get('windows', '-')} ({cov.get('windows_with_face', '-')}) |")
    ok = [x for x in r["runs"] if "error" not in x]
    if len(ok) > 1 and ok[-1]["wall_s"] > ok[0]["wall_s"]:
        rate = (ok[-1]["seconds"] - ok[0]["seconds"]) / (ok[-1]["wall_s"] - ok[0]["wall_s"])
        lines.append(f"\nWithout start-up (the longest minus the shortest run): {rate:.1f} video-s per s "
                     f"({rate * FPS:.0f} frames/s); start-up (imports, weights, compilation) is most of a short run.")
    covered = all(x.get("coverage", {}).get("last_frame") == x["frames"] for x in ok)
    lines.append(f"Windows cover every frame of every video: {'yes' if covered else 'NO'}.")
    if r.get("ratio") is not None:
        lines.append(f"Peak RSS, longest / shortest video: {r['ratio']:.2f}x (target <= 1.5x: "
                     f"{'met' if r['ratio'] <= 1.5 else 'not met'}).")
    return "\n".join(lines)


def main(args) -> dict:
    load_before = os.getloadavg()[0]
    seconds = [float(s) for s in (args.seconds or ("5,20" if args.quick else "60,600")).split(",")]
    root = tempfile.mkdtemp(prefix="predict_mem_bench_")
    runs, loads = [], []
    try:
        for sec in seconds:
            video = os.path.join(root, f"face_{sec:g}s.mp4")
            t0 = time.perf_counter()
            frames = write_video(video, sec)
            log(f"wrote {video}: {frames} frames in {time.perf_counter() - t0:.1f} s")
            out_dir = os.path.join(root, f"out_{sec:g}")
            load = os.getloadavg()[0]
            loads.append(load)
            res = run_predict(video, out_dir, args.timeout)
            res.update(seconds=sec, frames=frames, load=load, video_mb=os.path.getsize(video) / 2**20)
            if "error" not in res:
                res["video_s_per_s"] = sec / res["wall_s"]
                res["coverage"] = coverage(out_dir, video)
            log(f"{sec:g} s video: {res['wall_s']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB"
                + (f", {res['error']}" if "error" in res else ""))
            runs.append(res)
            os.remove(video)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ok = [x for x in runs if "error" not in x]
    ratio = ok[-1]["peak_rss_mb"] / ok[0]["peak_rss_mb"] if len(ok) == len(runs) and len(ok) > 1 else None
    result = {"runs": [{k: v for k, v in x.items() if k != "tail"} | {"tail": x["tail"][-400:]} for x in runs],
              "ratio": ratio}
    result["meta"] = machine.process_meta(load_before, loads, quick=args.quick, fps=FPS, size=[W, H])
    print(markdown(result))
    machine.write_result(RESULTS, "predict_memory", result)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: 5 s and 20 s videos")
    p.add_argument("--seconds", default="", help="comma-separated video lengths in s, shortest first (default 60,600)")
    p.add_argument("--timeout", type=float, default=900, help="seconds one predict command may run")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
