"""Benchmark: speed of the whole predict command on a 640x360 25 fps face video, detecting on every frame vs every few.

    python benchmarks/predict_speed.py [--seconds 60] [--rounds 2] [--models mini_xception_fer,features]
                                       [--every 5,10] [--quick]

Writes one synthetic video (OpenCV VideoWriter, mp4v, 640x360 at 25 fps; --seconds long, 60 by
default, --quick: 4) of a real face (scikit-image's astronaut, about 115 px high, so OpenCV's Haar
detector finds it) drifting across a grey frame, and times, as a user would, each in its own process:

    python -m fer_jax.predict --model mini_xception_fer VIDEO --out TMP --detect_every N
    python -m fer_jax.predict --workdir RUN VIDEO --out TMP --detect_every N

with N = 1 (the detector on every frame: the old default, the reference of each model's ratio)
and the new default (`fer_jax.video.face_follow.DEFAULT_DETECT_EVERY`, faces followed between
detections), or the N values given with --every. RUN is a `configs/fusion.py:face` run on
cached `dfew_features/mini_xception_fer` features, trained here first for a few steps on a tiny
synthetic DFEW (`tfds_dfew.synthetic` -> `tfds_dfew.build` -> `fer_jax.extract` ->
`fer_jax.train`); its speed, not its accuracy, is what counts. Rounds are interleaved (each
round runs every contender once, in a rotated order), so load from other programs hits them
alike. The wall time includes start-up (imports, weights, compilation) and the JSON, CSV and PNG;
video-seconds per second is the video's length over the median wall time (>= 1: real time). The
outputs of a model are compared with its every-frame output too: frames whose face / no-face
status differs, the smallest IoU of their boxes and the largest difference of a window's
probability. Output: a Markdown table on stdout with the CPU model, AVX-512 and the load averages,
and JSON in benchmarks/results/predict_speed_<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # machine.py, also when this file is imported by tests
sys.path.insert(0, str(REPO))  # configs/, when run as `python benchmarks/predict_speed.py`
import machine  # noqa: E402
import tiny_data  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
FPS = 25
W, H = 640, 360
MODELS = ("mini_xception_fer", "features")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)


def write_video(path: str, seconds: float, fps: int = FPS) -> int:
    """A W x H mp4v video of the astronaut's face drifting left and right (and a little up and down); returns frames."""
    import cv2
    from skimage import data

    face = cv2.resize(data.astronaut()[0:300, 60:460], (480, 360), interpolation=cv2.INTER_AREA)  # face ~115 px
    face = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (W, H))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with mp4v")
    n = int(round(seconds * fps))
    for i in range(n):
        frame = np.full((H + 24, W, 3), 90, np.uint8)
        dx = int(round(80 + 70 * np.sin(i / 40.0)))  # up to ~1.8 px per frame
        dy = int(round(12 + 10 * np.cos(i / 31.0)))
        frame[dy:dy + 360, dx:dx + 480] = face
        writer.write(np.ascontiguousarray(frame[12:12 + H]))
    writer.release()
    return n


def train_tiny_run(root: str, steps: int) -> str:
    """A configs/fusion.py:face run on mini_xception_fer features of a tiny synthetic DFEW; returns its workdir."""
    from configs import fusion
    from fer_jax import train

    features_dir = tiny_data.features(root)
    c = fusion.get_config("face")
    c.dataset.data_dir = features_dir
    c.batch_size, c.eval_batch_size, c.num_train_steps = 8, 8, steps
    c.log_every, c.eval_every, c.checkpoint_every, c.progress_bar = steps, 0, steps, False
    c.model.width, c.model.depth, c.model.mlp_dim = 32, 1, 64
    run = os.path.join(root, "run")
    train.train_and_evaluate(c, run)
    return run


def train_quietly(root: str, steps: int) -> str:
    """train_tiny_run with what the builders print sent to stderr (stdout is for the table)."""
    with contextlib.redirect_stdout(sys.stderr):
        return train_tiny_run(root, steps)


def run_predict(model_args: list[str], video: str, out_dir: str, every: int, timeout: float) -> dict:
    """One predict command in its own process: wall and CPU seconds, exit code, and its JSON."""
    cmd = [sys.executable, "-m", "fer_jax.predict", *model_args, video, "--out", out_dir, "--detect_every", str(every)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"ran past {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    if proc.returncode:
        return {"error": f"exit {proc.returncode}: " + (stderr.strip().splitlines() or ["?"])[-1][:300]}
    path = Path(out_dir) / (Path(video).stem + "_emotions.json")
    return {"wall_s": wall, "json": json.loads(path.read_text())}


def compare(new: dict, old: dict) -> dict:
    """Frames whose face status differs, the smallest box IoU and the largest window probability difference."""
    a = np.array([f["box"] or [np.nan] * 4 for f in old["frames"]], np.float64)
    b = np.array([f["box"] or [np.nan] * 4 for f in new["frames"]], np.float64)
    both = ~np.isnan(a[:, 0]) & ~np.isnan(b[:, 0])
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1, y1 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]), np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    iou = inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)
    diffs = [abs(p[c] - q[c]) for w, v in zip(new["windows"], old["windows"])
             if (p := w["probabilities"]) and (q := v["probabilities"]) for c in p]
    return {"status_differs": int((np.isnan(a[:, 0]) != np.isnan(b[:, 0])).sum()),
            "min_iou": float(iou[both].min()) if both.any() else None,
            "max_prob_diff": float(max(diffs)) if diffs else None}


def markdown(r: dict) -> str:
    m = r["meta"]
    lines = [f"Whole predict command (start-up, JSON, CSV and PNG included) on a {m['seconds']:g} s {W}x{H} mp4v "
             f"video at {FPS} fps, {m['rounds']} interleaved round(s), median wall time. "
             + machine.describe(m, per="round"), "",
             "| model | face detection | wall | video-s per s | vs every frame | detector ran on | "
             "status differs | min IoU | max prob diff |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        if "error" in x:
            lines.append(f"| {x['model']} | {x['detection']} | not measured: {x['error']} | - | - | - | - | - | - |")
            continue
        c = x.get("compare") or {}
        iou = f"{c['min_iou']:.3f}" if c.get("min_iou") is not None else "-"
        diff = f"{c['max_prob_diff']:.4f}" if c.get("max_prob_diff") is not None else "-"
        lines.append(f"| {x['model']} | {x['detection']} | {x['wall_s']:.1f} s | {x['video_s_per_s']:.2f} | "
                     f"{x['ratio']:.2f}x | {x['detector_frames']:,} of {x['frames']:,} frames | "
                     f"{c.get('status_differs', '-')} | {iou} | {diff} |")
    lines.append("\nReference of each ratio: the same model with the detector on every frame (--detect_every 1); "
                 "status / IoU / probabilities compare the two outputs of a model.")
    return "\n".join(lines)


def main(args) -> dict:
    from fer_jax.video import face_follow

    load_before = os.getloadavg()[0]
    seconds = args.seconds or (4.0 if args.quick else 60.0)
    rounds = args.rounds or (1 if args.quick else 2)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    values = [int(v) for v in args.every.split(",") if v.strip()] or [face_follow.DEFAULT_DETECT_EVERY]
    every = {"every frame": 1}
    for n in values:
        if n > 1:
            every[f"every {n} frames" + (" (default)" if n == face_follow.DEFAULT_DETECT_EVERY else "")] = n
    root = tempfile.mkdtemp(prefix="predict_speed_bench_")
    try:
        video = os.path.join(root, "face.mp4")
        t0 = time.perf_counter()
        frames = write_video(video, seconds)
        log(f"wrote {video}: {frames} frames in {time.perf_counter() - t0:.1f} s")
        model_args = {"mini_xception_fer": ["--model", "mini_xception_fer"]}
        if "features" in models:
            t0 = time.perf_counter()
            model_args["features"] = ["--workdir", train_quietly(os.path.join(root, "tiny"), 2 if args.quick else 4)]
            log(f"trained the tiny features run in {time.perf_counter() - t0:.1f} s")
        contenders = [(m, d) for m in models for d in every]
        walls = {c: [] for c in contenders}
        outputs, errors, loads = {}, {}, []
        for r in range(rounds):
            for model, detection in contenders[r % len(contenders):] + contenders[: r % len(contenders)]:
                if (model, detection) in errors:
                    continue
                out_dir = os.path.join(root, f"out_{model}_{every[detection]}")
                res = run_predict(model_args[model], video, out_dir, every[detection], args.timeout)
                if "error" in res:
                    errors[(model, detection)] = res["error"]
                else:
                    walls[(model, detection)].append(res["wall_s"])
                    outputs[(model, detection)] = res["json"]
                log(f"{model}, {detection}: " + (res.get("error") or f"{res['wall_s']:.1f} s"))
            loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = []
    for model, detection in contenders:
        row = {"model": "mini_xception_fer" if model == "mini_xception_fer" else "features run (fusion face)",
               "detection": detection, "every": every[detection]}
        if (model, detection) in errors:
            rows.append(row | {"error": errors[(model, detection)]})
            continue
        wall = statistics.median(walls[(model, detection)])
        out = outputs[(model, detection)]
        reference = (model, "every frame")
        ref_wall = statistics.median(walls[reference]) if walls.get(reference) else None
        row.update(wall_s=wall, walls_s=walls[(model, detection)], video_s_per_s=seconds / wall,
                   ratio=ref_wall / wall if ref_wall else float("nan"), frames=out["num_frames"],
                   detector_frames=out["summary"].get("detector_frames", out["num_frames"]),
                   face_windows=out["summary"]["face_windows"],
                   compare=compare(out, outputs[reference]) if reference in outputs else None)
        rows.append(row)
    result = {"rows": rows}
    result["meta"] = machine.process_meta(load_before, loads, quick=args.quick, seconds=seconds, rounds=rounds,
                                          fps=FPS, size=[W, H])
    print(markdown(result))
    machine.write_result(RESULTS, "predict_speed", result)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: a 4 s video, one round")
    p.add_argument("--seconds", type=float, default=0, help="the video's length in s (default 60)")
    p.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 2)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    p.add_argument("--every", default="", help="comma-separated --detect_every values to time besides 1 (default: "
                   "the default)")
    p.add_argument("--timeout", type=float, default=900, help="seconds one predict command may run")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
