"""Benchmark: end-to-end fine-tuning step (frames -> ResNet-18 -> fusion transformer -> loss, AdamW), JAX vs PyTorch.

    python benchmarks/finetune_step.py [--batch 8 --rounds 7] [--quick] [--no-compile]

The recipe of configs/paper.py:finetune (ResNet-18 `generator` tokenizer at a tenth of the
learning rate, width 512, 3 layers, 8 heads, MLP 1024, dropout 0.1, AdamW with clipping, a random
104 px crop of the stored 112 px frames and a flip of half the clips), with random weights of
the pretrained shapes (`pretrained=False`: no download) and `--batch` clips of 16 frames
(the paper's 32 is 512 frames per step; the default 8 keeps a 2-core run in minutes). Contenders,
each in its own worker process (so each has its own peak RSS and XLA flags), timed in
interleaved rounds (order rotated every round) of `--steps` steps:
  jax_memory    `fer_jax.train.make_trainer`'s jitted step on one fixed batch already in memory
  jax_pipeline  the same step fed by `fer_jax.input_pipeline.train_dataset` (Grain over the TFDS
                array_record build: JPEG decode, crop, flip; the config's read threads,
                prefetch 2) from a synthetic `dfew/frames112` built in a temp dir
                (`tfds_dfew.synthetic.generate` + `tfds_dfew.build.build`); each block first runs
                `prefetch` untimed steps so a full buffer does not hide a slow pipeline
  torch_eager   torchvision resnet18 (fc removed, ImageNet normalisation) + benchmarks/torch_fusion.py's
                FusionTransformer on its 512-d features, `torch_fusion.train_step` (AdamW, clipping)
  torch_compile the same model under torch.compile (skipped with --no-compile or if it fails)
Input stall = jax_pipeline / jax_memory - 1. The pipeline alone (clips/s it can deliver) is
timed once in the JAX worker. PyTorch gets the same batch (same crop size) from memory; its
AdamW has no per-group rate for the ResNet (the cost is the same). Output: a Markdown table
on stdout (clips/s, ratio to torch_eager, peak RSS per worker), CPU model, AVX-512 and load
averages, and JSON in benchmarks/results/finetune_step_<time>.json. --quick: 64 px frames
(56 px crop), batch 2, a 1-layer width-32 transformer, 3 rounds: a smoke test, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import machine  # benchmarks/machine.py: the folder of a script run as `python benchmarks/x.py` is on sys.path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))
PREFIX = "@@"


def bench_config(args, data_dir: str):
    from configs import paper

    c = paper.get_config("finetune,tiny" if args.quick else "finetune")
    c.modalities.face.pretrained = False  # random weights of the pretrained shapes: nothing to download
    c.dataset.name = "dfew/frames64" if args.quick else "dfew/frames112"
    c.dataset.data_dir = data_dir
    c.batch_size = args.batch
    c.num_train_steps = 10_000
    c.data.prefetch = 2  # a step takes seconds: two batches ahead is plenty, and each timed block drains them first
    c.progress_bar = False
    return c


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _say(kind: str, **payload) -> None:
    print(PREFIX + json.dumps({"kind": kind, **payload}), flush=True)


def random_batch(config, crop: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    b = int(config.batch_size)
    return {"face": rng.integers(0, 256, (b, 16, crop, crop, 3), dtype=np.uint8),
            "label": rng.integers(0, 7, b).astype(np.int32), "mask": np.ones(b, bool)}


# ----------------------------------------------------------------------------- workers


def jax_worker(args, data_dir: str):
    from fer_jax import xla_defaults

    xla_defaults.use_training_defaults()  # what `python -m fer_jax.train` sets for a fine-tuning run, unless XLA_FLAGS is set
    import jax

    from fer_jax import input_pipeline, parallel, runs, train, train_state

    config = bench_config(args, data_dir)
    mesh = parallel.make_mesh()
    shapes = input_pipeline.example_shapes(config)
    graphdef, tx, state = train_state.init(config, runs.model_builder(config, shapes))
    state = jax.device_put(state, parallel.replicated(mesh))
    trainer = train.make_trainer(config, graphdef, tx, mesh)
    memory = parallel.global_batch(random_batch(config, shapes["face"][1]), mesh)
    base = jax.random.key(0)
    it = iter(input_pipeline.train_dataset(config))
    step = [0, state, None]

    def run(k, fed):
        t0 = time.perf_counter()
        for _ in range(k):
            batch = parallel.global_batch(next(it), mesh) if fed else memory
            step[1], step[2] = trainer.train_step(step[1], batch, jax.random.fold_in(base, step[0]))
            step[0] += 1
        jax.block_until_ready(step[1:])
        return (time.perf_counter() - t0) / k

    t0 = time.perf_counter()
    run(1, False)
    compile_s = time.perf_counter() - t0
    run(1, True)
    alone_it = iter(input_pipeline.train_dataset(config))  # the pipeline alone, from a fresh iterator
    next(alone_it)
    n = 8 if args.quick else 24  # well beyond the prefetch buffer
    t0 = time.perf_counter()
    for _ in range(n):
        next(alone_it)
    alone = n * int(config.batch_size) / (time.perf_counter() - t0)
    del alone_it
    prefetch = int(config.data.get("prefetch", 8))
    _say("ready", compile_s=compile_s, pipeline_alone_clips_per_s=alone, params=train_state.param_count(state),
         shapes={k: list(v) for k, v in shapes.items()}, jax=jax.__version__, device=str(jax.devices()[0]),
         xla_flags=os.environ.get("XLA_FLAGS", ""))
    for line in sys.stdin:
        cmd, k = line.split()
        if cmd == "fed":
            time.sleep(0.2)  # let the prefetch buffer refill, as between blocks in training's logging pauses
            run(prefetch, True)
        _say("time", seconds=run(int(k), cmd == "fed"), rss_mb=peak_rss_mb())


def torch_worker(args, data_dir: str, compiled: bool):
    import importlib.util

    import torch
    import torchvision

    spec = importlib.util.spec_from_file_location("torch_fusion", Path(__file__).with_name("torch_fusion.py"))
    tf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tf)
    config = bench_config(args, data_dir)
    crop = int(config.data.crop_size)

    class FramesModel(torch.nn.Module):
        """uint8[B, T, H, W, 3] frames -> ResNet-18 features per frame -> the fusion transformer."""

        modalities = ("face",)

        def __init__(self):
            super().__init__()
            self.resnet = torchvision.models.resnet18()
            self.resnet.fc = torch.nn.Identity()
            self.fusion = tf.from_config(config, {"face": 512}, 16)
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)

        def forward(self, inputs):
            x = inputs["face"]
            b, t = x.shape[:2]
            x = x.reshape((b * t,) + x.shape[2:]).permute(0, 3, 1, 2).float()
            features = self.resnet((x - self.mean) / self.std).reshape(b, t, -1)
            return self.fusion({"face": features})

    torch.manual_seed(0)
    model = FramesModel()
    params = tf.param_count(model)
    runnable = torch.compile(model) if compiled else model
    opt, sched = tf.make_optimizer(model, config)
    batch = {k: torch.from_numpy(v) for k, v in random_batch(config, crop).items()}
    batch["label"] = batch["label"].long()

    def run(k):
        t0 = time.perf_counter()
        for _ in range(k):
            tf.train_step(runnable, opt, sched, batch, label_smoothing=float(config.loss.label_smoothing),
                          grad_clip_norm=config.optimizer.grad_clip_norm)
        return (time.perf_counter() - t0) / k

    t0 = time.perf_counter()
    try:
        run(2)
    except Exception as e:  # torch.compile can fail on some installs: report, do not abort the benchmark
        _say("failed", error=f"{type(e).__name__}: {e}"[:400])
        return
    _say("ready", compile_s=time.perf_counter() - t0, params=params, torch=torch.__version__,
         threads=torch.get_num_threads())
    for line in sys.stdin:
        _say("time", seconds=run(int(line.split()[1])), rss_mb=peak_rss_mb())


# ----------------------------------------------------------------------------- main process


class Worker:
    def __init__(self, name: str, args, data_dir: str, log_dir: str):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--data-dir", data_dir,
               "--batch", str(args.batch)] + (["--quick"] if args.quick else [])
        self.name = name
        self.log = open(os.path.join(log_dir, f"{name}.stderr"), "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def receive(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX):])
        return {"kind": "failed", "error": f"exited with {self.proc.wait()}; see {self.log.name}"}

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.receive()

    def close(self):
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def build_dataset(root: str, quick: bool) -> str:
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    from tfds_dfew import build, synthetic

    tfds.display_progress_bar(False)
    absl_logging.set_verbosity(absl_logging.ERROR)
    release, data_dir = os.path.join(root, "DFEW"), os.path.join(root, "tfds")
    size = 64 if quick else 112
    synthetic.generate(release, 30 if quick else 60, seed=0, frame_size=size, max_frames=16, openpose=False, workers=1,
                       audio=False)
    build.build(release, data_dir, config=f"frames{size}", num_workers=1)
    return data_dir


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)


def markdown(r: dict) -> str:
    m, s = r["meta"], r["stats"]
    cpu = m["cpu"]
    avx = {True: "with AVX-512", False: "no AVX-512", None: "AVX-512 unknown"}[cpu["avx512"]]
    lines = [f"Fine-tuning step, configs/paper.py:{'finetune,tiny' if m['quick'] else 'finetune'}: B={m['batch']} clips x 16 "
             f"frames at {m['crop']} px -> ResNet-18 -> fusion transformer -> loss, AdamW; {m['params']:,} parameters "
             f"(PyTorch {m['torch_params']:,}). {cpu['model']} ({avx}), {m['cpu_count']} cores; load average "
             f"{m['load_before']:.2f} before, {m['load_after']:.2f} after; JAX {m['jax']}, torch {m['torch']}."
             + (" --quick: a smoke test, not a measurement." if m["quick"] else ""), "",
             "| variant | clips/s | ms/step (median) | vs torch_eager | peak RSS |", "|---|---:|---:|---:|---:|"]
    ref = s.get("torch_eager", {}).get("clips_per_s")
    for name, st in s.items():
        ratio = f"{st['clips_per_s'] / ref:.2f}x" if ref else "-"
        lines.append(f"| {name} | {st['clips_per_s']:.2f} | {st['median_s'] * 1e3:.0f} | {ratio} | {st['rss_mb']:.0f} MB |")
    if "stall" in r:
        lines.append(f"\nInput stall (jax_pipeline vs jax_memory): {100 * r['stall']:.1f}% (target < 5%: "
                     f"{'met' if r['stall'] < 0.05 else 'not met'}); the pipeline alone delivers "
                     f"{m['pipeline_alone_clips_per_s']:.1f} clips/s.")
    if ref and "jax_memory" in s:
        ratio = s["jax_memory"]["clips_per_s"] / ref
        lines.append(f"JAX / PyTorch eager: {ratio:.3f}x (target >= 1.2x: {'met' if ratio >= 1.2 else 'not met'}).")
    for name, err in r.get("failed", {}).items():
        lines.append(f"{name}: not measured ({err}).")
    return "\n".join(lines)


def main(args) -> dict:
    load_before = os.getloadavg()[0]
    rounds = args.rounds or (3 if args.quick else 7)
    k = args.steps or (1 if args.quick else 2)
    with tempfile.TemporaryDirectory(prefix="finetune_bench_") as tmp:
        log("building a synthetic frames dataset ...")
        data_dir = build_dataset(tmp, args.quick)
        names = ["jax", "torch_eager"] + ([] if args.no_compile else ["torch_compile"])
        workers, ready, failed = {}, {}, {}
        for name in names:  # one at a time: start-up and compilation are not timed against each other
            log(f"starting {name} ...")
            w = Worker(name, args, data_dir, tmp)
            msg = w.receive()
            if msg["kind"] == "ready":
                workers[name], ready[name] = w, msg
            else:
                failed[name] = msg.get("error", "failed")
                w.close()
        plan = [("jax_memory", "jax", "mem"), ("jax_pipeline", "jax", "fed")] + [(n, n, "run") for n in names[1:]]
        plan = [p for p in plan if p[1] in workers]
        times = {p[0]: [] for p in plan}
        rss = {}
        for r in range(rounds):
            order = plan[r % len(plan):] + plan[: r % len(plan)]
            for label, wname, cmd in order:
                msg = workers[wname].ask(f"{cmd} {k}")
                times[label].append(msg["seconds"])
                rss[label] = msg["rss_mb"]
            log(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {t[-1] * 1e3:.0f} ms" for n, t in times.items()))
        for w in workers.values():
            w.close()
    stats = {n: {"median_s": float(np.median(t)), "clips_per_s": args.batch / float(np.median(t)), "times_s": t,
                 "rss_mb": rss[n]} for n, t in times.items() if t}
    jx = ready.get("jax", {})
    result = {"stats": stats, "failed": failed, "ready": ready}
    if "jax_memory" in stats and "jax_pipeline" in stats:
        result["stall"] = stats["jax_pipeline"]["median_s"] / stats["jax_memory"]["median_s"] - 1
    import jax
    import torch  # lazy: only for its version string in the main process

    result["meta"] = {"batch": args.batch, "quick": args.quick, "rounds": rounds, "steps_per_round": k,
                      "crop": (jx.get("shapes", {}).get("face") or [0, 0])[1], "params": jx.get("params", 0),
                      "torch_params": ready.get("torch_eager", {}).get("params", 0),
                      "pipeline_alone_clips_per_s": jx.get("pipeline_alone_clips_per_s", 0.0),
                      "cpu": machine.cpu_info(), "cpu_count": os.cpu_count(), "load_before": load_before,
                      "load_after": os.getloadavg()[0], "jax": jax.__version__, "torch": torch.__version__,
                      "device": jx.get("device"), "xla_flags": os.environ.get("XLA_FLAGS", ""),
                      "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print(markdown(result))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"finetune_step_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwritten: {path}", file=sys.stderr)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: 64 px frames, batch 2, a tiny transformer")
    p.add_argument("--batch", type=int, default=0, help="clips per step (default 8, quick 2)")
    p.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 7, quick 3)")
    p.add_argument("--steps", type=int, default=0, help="steps per round and contender (default 2, quick 1)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batch = args.batch or (2 if args.quick else 8)
    return args


if __name__ == "__main__":
    _args = parse_args()
    if _args.worker == "jax":
        jax_worker(_args, _args.data_dir)
    elif _args.worker:
        torch_worker(_args, _args.data_dir, compiled=_args.worker == "torch_compile")
    else:
        main(_args)
