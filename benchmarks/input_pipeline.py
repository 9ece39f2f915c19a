"""Benchmark: the training input pipeline alone, in clips per second and per CPU core.

    python benchmarks/input_pipeline.py [--clips 48] [--batches 12] [--sizes 112,224] [--threads 1,N] [--quick]

What a training step from frames waits for: Grain over the TFDS data source of a `dfew/frames<S>`
build, reading each clip's 16 stored JPEG frames, decoding them, taking a random crop (104/112 of the
frame side, as configs/paper.py) and flipping half of the clips, then batching
(`fer_jax.input_pipeline.train_dataset`, configs/frames.py's training transform). No model runs.
Frames come from a synthetic release drawn at 224 px (tfds_dfew.synthetic), built once as
frames112 and frames224 in a temporary folder.

For each frame size and each thread count (`config.data.read_threads`: 1 and every core by
default): two warm-up batches, then --batches timed batches of 8 clips. Output: a Markdown table on
stdout (clips/s, clips/s per thread used, ratio to one thread) with the CPU, AVX-512 and the load;
JSON in benchmarks/results/input_pipeline_<time>.json. Divide the clips/s an accelerator's step
takes by the per-core figure to get the host cores that keep it fed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))
import machine  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
BATCH = 8


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)


def build(root: str, clips: int, sizes: list[int]) -> str:
    """A synthetic release at 224 px built as dfew/frames<S> for every size; returns the data dir."""
    from tfds_dfew import build as build_lib, synthetic

    release = os.path.join(root, "release", "DFEW")
    synthetic.generate(release, clips, seed=5, frame_size=224, max_frames=24, workers=2, audio=False)
    data_dir = os.path.join(root, "tfds")
    for size in sizes:
        build_lib.build(release, data_dir, config=f"frames{size}", num_workers=os.cpu_count())
    return data_dir


def measure(data_dir: str, size: int, threads: int, batches: int) -> dict:
    from configs import frames
    from fer_jax import input_pipeline

    config = frames.get_config("")
    config.dataset.name, config.dataset.data_dir, config.dataset.fold = f"dfew/frames{size}", data_dir, 1
    config.data.crop_size = size * 104 // 112
    config.data.read_threads, config.data.prefetch = threads, 2 * threads
    config.batch_size = BATCH
    source = input_pipeline.open_source(config, input_pipeline.fold_split(config, "train"))
    stream = iter(input_pipeline.train_dataset(config, source=source))
    for _ in range(2):
        batch = next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(stream)
    seconds = time.perf_counter() - start
    shape = next(tuple(v.shape) for v in batch.values() if getattr(v, "ndim", 0) == 5)  # [B, T, S, S, 3]
    return {"size": size, "threads": threads, "clips": batches * BATCH, "seconds": seconds,
            "clips_per_s": batches * BATCH / seconds, "batch_shape": list(shape)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=48, help="synthetic clips in the release (default 48)")
    p.add_argument("--batches", type=int, default=12, help=f"timed batches of {BATCH} clips per row (default 12)")
    p.add_argument("--sizes", default="112,224", help="frame sizes to build and read (default 112,224)")
    p.add_argument("--threads", default=f"1,{os.cpu_count()}", help="read thread counts (default 1 and every core)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.batches = 24, 2
    sizes = [int(s) for s in args.sizes.split(",")]
    threads = sorted({int(t) for t in args.threads.split(",")})
    load_before, loads = os.getloadavg()[0], []
    with tempfile.TemporaryDirectory() as root:
        log(f"building {args.clips} synthetic clips as {', '.join(f'frames{s}' for s in sizes)}")
        data_dir = build(root, args.clips, sizes)
        rows = []
        for size in sizes:
            for n in threads:
                rows.append(measure(data_dir, size, n, args.batches))
                loads.append(os.getloadavg()[0])
                log(f"frames{size}, {n} thread(s): {rows[-1]['clips_per_s']:.1f} clips/s")
    for row in rows:
        one = next(r for r in rows if r["size"] == row["size"] and r["threads"] == min(threads))
        row["clips_per_s_per_thread"] = row["clips_per_s"] / row["threads"]
        row["ratio_to_fewest_threads"] = row["clips_per_s"] / one["clips_per_s"]
    meta = machine.process_meta(load_before, loads, clips=args.clips, batches=args.batches, batch=BATCH,
                                quick=args.quick)
    print(f"Input pipeline alone (decode 16 JPEG frames + random crop 104/112 + flip, batches of {BATCH}); "
          f"{machine.describe(meta)}\n")
    print("| build | read threads | clips/s | clips/s per thread | ratio to fewest threads |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| frames{r['size']} (crop {r['batch_shape'][2]}) | {r['threads']} | {r['clips_per_s']:.1f} | "
              f"{r['clips_per_s_per_thread']:.1f} | {r['ratio_to_fewest_threads']:.2f}x |")
    machine.write_result(RESULTS, "input_pipeline", {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
