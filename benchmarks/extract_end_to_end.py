"""Benchmark: feature extraction as a user runs it, end to end (JPEG decoding included), JAX vs torchvision.

    python benchmarks/extract_end_to_end.py [--clips 300] [--rounds 2] [--no-compile] [--variants a,b] [--quick]

A synthetic DFEW release (`tfds_dfew.synthetic.generate`, 112 px frames, no sound, no OpenPose)
is generated and built into `dfew/frames112` in a temp dir, and random ResNet-18 weights are
written as a torchvision state dict (`torch.save(torchvision.models.resnet18().state_dict())`), so
nothing is downloaded. Every contender is one whole command in its own process (so each gets its
own XLA flags and pays its own start-up, as a user would), run in interleaved rounds (the order
rotates every round), each into a fresh output folder:

  jax                 python -m fer_jax.extract --config configs/extract.py:resnet18
                      --config.generators.face_resnet18.weights=<the .pth>, XLA_FLAGS unset: the
                      CLI sets its CPU inference default (fer_jax.xla_defaults) and says so
  jax_xla_defaults    the same with XLA_FLAGS= (set, empty) in the environment: the user's setting
                      wins, so XLA runs with its own default flags
  torch_eager         what a PyTorch user would write for the same job (this file, --torch-worker):
                      read every split of the same array_record build through `tfds.data_source`
                      (TFDS decodes the JPEGs), batches of 16 clips x 16 frames, ImageNet
                      normalisation, torchvision resnet18 (fc removed) with the same weights, eager,
                      `torch.inference_mode()`, features to numpy, one np.save per split
  torch_compile       the same with torch.compile of the network (skipped with --no-compile; a
                      failure is reported in its row)

Reported per contender (medians over rounds): frames/s of the whole command (clips x 16 / wall
time, i.e. interpreter start, imports, weights, compilation, reading, writing) and of its
extraction part alone (JAX: from TFDS's first "Generating splits" line to "written to" in the
command's output, i.e. including the jit compilation of the first batch; torch: the worker's own
timing from opening the data source to the last np.save), each as a ratio to torch_eager; and the
peak RSS of the command (wait4's ru_maxrss). The acceptance target is JAX >= 1.2x torchvision
eager frames/s. A last check compares the JAX and torch features of one split (same weights,
same frames): they must agree to ~1e-5. Output: a Markdown table on stdout with the CPU model,
AVX-512 and the load averages, and JSON in benchmarks/results/extract_end_to_end_<time>.json.
--quick: 24 clips, one round, no torch.compile: a smoke test, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # fer_jax, tfds_dfew
sys.path.insert(0, str(REPO / "benchmarks"))  # machine.py, also when this file is imported by tests
import machine  # noqa: E402
RESULTS = REPO / "benchmarks" / "results"
MARK = "@@extract@@"
FRAMES_PER_CLIP = 16
BATCH_CLIPS = 16
STEP_CLIPS = 2  # fer_jax.extract on the CPU: a partial batch goes 2 clips per call (generators.CPU_FRAMES_PER_STEP)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the torchvision reference


def torch_worker(data_dir: str, weights: str, out_dir: str, compiled: bool) -> None:
    """The PyTorch user's extraction: every split of dfew/frames112 -> resnet18 features -> <out_dir>/<split>.npy."""
    t_start = time.perf_counter()
    import tensorflow_datasets as tfds
    import torch
    import torchvision

    import tfds_dfew.dfew  # noqa: F401  (registers the `dfew` builder with TFDS)

    model = torchvision.models.resnet18()
    model.load_state_dict(torch.load(weights, map_location="cpu"))
    model.fc = torch.nn.Identity()
    model.eval()
    net = torch.compile(model) if compiled else model
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    t0 = time.perf_counter()
    builder = tfds.builder("dfew/frames112", data_dir=data_dir)
    os.makedirs(out_dir, exist_ok=True)
    clips = 0
    for split in builder.info.splits:
        source = tfds.data_source("dfew/frames112", split=split, data_dir=data_dir)
        features = []
        for start in range(0, len(source), BATCH_CLIPS):
            records = [source[i] for i in range(start, min(start + BATCH_CLIPS, len(source)))]
            frames = np.stack([np.stack(r["frames"]) for r in records])  # uint8[B, 16, H, W, 3]
            b, t = frames.shape[:2]
            x = torch.from_numpy(frames).reshape((b * t,) + frames.shape[2:]).permute(0, 3, 1, 2).float()
            with torch.inference_mode():
                f = net((x / 255.0 - mean) / std)
            features.append(f.reshape(b, t, -1).numpy())
            clips += b
        if features:
            np.save(os.path.join(out_dir, f"{split}.npy"), np.concatenate(features))
    print(MARK + json.dumps({"extract_s": time.perf_counter() - t0, "setup_s": t0 - t_start, "clips": clips,
                             "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)


# ----------------------------------------------------------------------------- the main process


def build_release(root: str, clips: int) -> tuple[str, str, dict]:
    """(data_dir of dfew/frames112, random resnet18 .pth, {split: clips}) under root."""
    import tensorflow_datasets as tfds
    import torch
    import torchvision
    from absl import logging as absl_logging

    from tfds_dfew import build, synthetic

    tfds.display_progress_bar(False)
    absl_logging.set_verbosity(absl_logging.ERROR)
    release, data_dir = os.path.join(root, "DFEW"), os.path.join(root, "tfds")
    synthetic.generate(release, clips, seed=0, frame_size=112, workers=1, audio=False, openpose=False,
                       max_frames=FRAMES_PER_CLIP)
    build.build(release, data_dir, config="frames112", num_workers=1)
    splits = {k: v.num_examples for k, v in tfds.builder("dfew/frames112", data_dir=data_dir).info.splits.items()}
    torch.manual_seed(0)
    weights = os.path.join(root, "resnet18_random.pth")
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    return data_dir, weights, splits


def contenders(data_dir: str, weights: str, compile_torch: bool) -> dict[str, tuple[list[str], dict]]:
    """name -> (command without its output folder, environment); the output folder is appended per run."""
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    jax_cmd = [sys.executable, "-m", "fer_jax.extract", "--config", "configs/extract.py:resnet18",
               f"--config.generators.face_resnet18.weights={weights}", f"--config.source.data_dir={data_dir}",
               "--config.output.data_dir="]
    torch_cmd = [sys.executable, str(Path(__file__).resolve()), "--data-dir", data_dir, "--weights", weights,
                 "--out"]
    out = {"jax": (jax_cmd, base), "jax_xla_defaults": (jax_cmd, {**base, "XLA_FLAGS": ""}),
           "torch_eager": (torch_cmd[:2] + ["--torch-worker", "eager"] + torch_cmd[2:], base)}
    if compile_torch:
        out["torch_compile"] = (torch_cmd[:2] + ["--torch-worker", "compile"] + torch_cmd[2:], base)
    return out


def run_command(cmd: list[str], env: dict, out_dir: str, timeout: float) -> dict:
    """Runs one whole command; wall time, the extraction part, peak RSS (wait4) and the output's tail."""
    cmd = cmd[:-1] + [cmd[-1] + out_dir] if cmd[-1].endswith("=") else cmd + [out_dir]
    chunks: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def read():  # timestamps every chunk of output (tqdm writes its lines with \r, unbuffered)
        while True:
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            chunks.append((time.perf_counter(), data.decode(errors="replace")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(10)
    proc.stdout.close()
    text = "".join(c for _, c in chunks)

    def first_time(pattern: str) -> float | None:
        seen = ""
        for t, c in chunks:  # a marker may straddle two chunks: search what has arrived so far
            seen = seen[-200:] + c
            if pattern in seen:
                return t - t0
        return None

    result = {"wall_s": wall, "rc": proc.returncode, "peak_rss_mb": usage.ru_maxrss / 1024,
              "xla_note": "note: using XLA_FLAGS=" in text, "tail": text.replace("\r", "\n")[-1500:]}
    marks = [json.loads(line[len(MARK):]) for line in text.splitlines() if line.startswith(MARK)]
    if marks:  # the torch worker's own timing
        result.update(extract_s=marks[-1]["extract_s"], clips=marks[-1]["clips"], info=marks[-1])
    else:
        start, end = first_time("Generating splits"), first_time("written to")
        if start is not None and end is not None:
            result["extract_s"] = end - start
    if proc.returncode:
        result["error"] = f"exit {proc.returncode}: " + (text.strip().splitlines() or ["?"])[-1][:300]
    return result


def compare_features(jax_out: str, torch_out: str, split: str) -> float | None:
    """Max |jax - torch| / max |torch| over one split's features (None if either is missing)."""
    import tensorflow_datasets as tfds

    from tfds_dfew import features as features_lib

    npy = os.path.join(torch_out, f"{split}.npy")
    builder = features_lib.open_builder(jax_out, "resnet18")
    if builder is None or not os.path.exists(npy):
        return None
    ref = np.load(npy)
    source = builder.as_data_source(split=split)
    got = np.stack([np.asarray(source[i]["face_resnet18"]) for i in range(len(source))])
    del tfds
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))


def markdown(r: dict) -> str:
    m, s = r["meta"], r["stats"]
    cpu = m["cpu"]
    avx = {True: "with AVX-512", False: "no AVX-512", None: "AVX-512 unknown"}[cpu["avx512"]]
    lines = [f"Feature extraction end to end: ResNet-18 (random weights) over a synthetic dfew/frames112 build of "
             f"{m['clips']} clips ({m['frames']:,} frames at 112 px, JPEG), {m['rounds']} interleaved round(s), each "
             f"command in its own process. CPU {cpu['model']} ({avx}), {m['cpu_count']} cores; load average "
             f"{m['load_before']:.2f} before, {m['load_after']:.2f} after (per run: {m['loads_text']}); "
             f"jax {m['jax']}, torch {m['torch']}." + (" --quick: a smoke test, not a measurement." if m["quick"] else ""),
             "", "| variant | frames/s, whole command | vs torch eager | frames/s, extraction part | vs torch eager "
             "| wall (median) | peak RSS |", "|---|---:|---:|---:|---:|---:|---:|"]
    ref = s.get("torch_eager", {})
    for name, st in s.items():
        if "error" in st:
            lines.append(f"| {name} | not measured: {st['error']} | - | - | - | - | - |")
            continue
        whole = f"{st['fps_whole'] / ref['fps_whole']:.2f}x" if ref.get("fps_whole") else "-"
        part = (f"{st['fps_extract'] / ref['fps_extract']:.2f}x" if ref.get("fps_extract") and st.get("fps_extract")
                else "-")
        fps_part = f"{st['fps_extract']:.1f}" if st.get("fps_extract") else "-"
        lines.append(f"| {name}{VARIANT_NOTES.get(name, '')} | {st['fps_whole']:.1f} | {whole} | {fps_part} | {part} | "
                     f"{st['wall_s']:.1f} s | {st['peak_rss_mb']:,.0f} MB |")
    if ref.get("fps_whole") and "fps_whole" in s.get("jax", {}):
        ratio = s["jax"]["fps_whole"] / ref["fps_whole"]
        lines.append(f"\nJAX (`python -m fer_jax.extract` as shipped) / torchvision eager, whole command: {ratio:.2f}x "
                     f"(target >= 1.2x: {'met' if ratio >= 1.2 else 'not met'}).")
    padded = m.get("jax_padded_clips", 0)
    if padded > m["clips"]:
        lines.append(f"fer_jax.extract runs a split's last, partial batch {STEP_CLIPS} clips per call (two jitted shapes), "
                     f"so it runs the network on {padded} clips ({padded / m['clips']:.2f}x the {m['clips']} that the "
                     "torch loop runs); frames/s count the dataset's clips for both.")
    if r.get("max_rel_diff") is not None:
        lines.append(f"JAX vs torch features, split {r['compared_split']}: max relative difference {r['max_rel_diff']:.1e}.")
    return "\n".join(lines)


VARIANT_NOTES = {"jax": " (`fer_jax.extract`, its CPU default flags)", "jax_xla_defaults": " (`XLA_FLAGS=`: XLA's defaults)",
                 "torch_eager": " (torchvision, eager)", "torch_compile": " (torchvision, torch.compile)"}


def main(args) -> dict:
    load_before = os.getloadavg()[0]
    clips_arg = args.clips or (24 if args.quick else 300)
    rounds = args.rounds or (1 if args.quick else 2)
    compile_torch = not (args.no_compile or args.quick)
    root = tempfile.mkdtemp(prefix="extract_bench_")
    loads, runs = [], {}
    try:
        log(f"generating and building a synthetic release of {clips_arg} clips ...")
        data_dir, weights, splits = build_release(root, clips_arg)
        clips = sum(splits.values())
        frames = clips * FRAMES_PER_CLIP
        log(f"built: {splits} ({clips} clips with frames)")
        plan = contenders(data_dir, weights, compile_torch)
        if args.variants:
            wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
            unknown = sorted(set(wanted) - set(plan))
            if unknown:
                raise SystemExit(f"unknown variants {unknown}; choose from {list(plan)}")
            plan = {k: plan[k] for k in wanted}
        names = list(plan)
        runs = {n: [] for n in names}
        kept = {}
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                out_dir = os.path.join(root, f"out_{name}_{r}")
                load = os.getloadavg()[0]
                res = run_command(*plan[name], out_dir, timeout=args.timeout)
                res["load"] = load
                loads.append(load)
                runs[name].append(res)
                log(f"round {r + 1}/{rounds} {name}: {res['wall_s']:.1f} s whole, "
                    f"{res.get('extract_s', float('nan')):.1f} s extraction{', ' + res['error'] if 'error' in res else ''}")
                if res["rc"] == 0 and name in ("jax", "torch_eager") and r == rounds - 1:
                    kept[name] = out_dir
                else:
                    shutil.rmtree(out_dir, ignore_errors=True)
        compared = next((k for k, v in splits.items() if v), None)
        diff = None
        if len(kept) == 2 and compared:
            try:
                diff = compare_features(kept["jax"], kept["torch_eager"], compared)
            except Exception as e:  # the check is a bonus: report, do not fail the benchmark
                log(f"feature comparison failed: {type(e).__name__}: {e}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    stats = {}
    for name, rs in runs.items():
        ok = [x for x in rs if x["rc"] == 0]
        if not ok:
            stats[name] = {"error": rs[-1].get("error", "failed") if rs else "not run"}
            continue
        wall = float(np.median([x["wall_s"] for x in ok]))
        st = {"wall_s": wall, "fps_whole": frames / wall, "peak_rss_mb": max(x["peak_rss_mb"] for x in ok),
              "xla_note": ok[-1]["xla_note"], "walls_s": [x["wall_s"] for x in ok]}
        parts = [x["extract_s"] for x in ok if x.get("extract_s")]
        if parts:
            st.update(extract_s=float(np.median(parts)), fps_extract=frames / float(np.median(parts)), extracts_s=parts)
        stats[name] = st
    import jax
    import torch

    result = {"stats": stats, "runs": {n: [{k: v for k, v in x.items() if k != "tail"} | {"tail": x["tail"][-400:]}
                                           for x in rs] for n, rs in runs.items()},
              "max_rel_diff": diff, "compared_split": compared}
    result["meta"] = {"clips": clips, "frames": frames, "splits": splits,
                      "jax_padded_clips": sum(-(-n // STEP_CLIPS) * STEP_CLIPS for n in splits.values()), "rounds": rounds, "quick": args.quick,
                      "cpu": machine.cpu_info(), "cpu_count": os.cpu_count(), "load_before": load_before,
                      "load_after": os.getloadavg()[0], "loads": loads,
                      "loads_text": ", ".join(f"{x:.2f}" for x in loads), "jax": jax.__version__,
                      "torch": torch.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print(markdown(result))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"extract_end_to_end_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwritten: {path}", file=sys.stderr)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: 24 clips, one round, no torch.compile")
    p.add_argument("--clips", type=int, default=0, help="clips in the synthetic release (default 300, quick 24)")
    p.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 2, quick 1)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender")
    p.add_argument("--variants", default="", help="comma-separated subset of jax, jax_xla_defaults, torch_eager, "
                   "torch_compile (default: all)")
    p.add_argument("--timeout", type=float, default=600, help="seconds one command may run")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (release, build, outputs)")
    p.add_argument("--torch-worker", choices=("eager", "compile"), help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    _args = parse_args()
    if _args.torch_worker:
        torch_worker(_args.data_dir, _args.weights, _args.out, compiled=_args.torch_worker == "compile")
    else:
        _result = main(_args)
        _diff = _result.get("max_rel_diff")
        if _diff is not None and _diff > 1e-4:  # the contenders computed different features: the timing means nothing
            sys.exit(f"JAX and torch features differ (max relative difference {_diff:.1e} > 1e-4)")
