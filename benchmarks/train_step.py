"""Benchmark: fusion-transformer training throughput (clips/s) of the real JAX train step vs PyTorch eager.

    python benchmarks/train_step.py [--quick] [--batch 32] [--rounds 15] [--no-compile]

One process, one Markdown table on stdout, JSON in benchmarks/results/. Parts:

1. Matmul peak: a float32 [n, n] @ [n, n] matmul (n = 4096) with numpy and
   with jax.jit, interleaved, medians. Targets are judged against numpy's (as the issue defines
   the peak); the fraction of jax.jit's is shown too (XLA's own matmul can be much faster).
2. Train step: `fer_jax.train.make_trainer`'s jitted step (NNX split + jax.jit + merge, AdamW with
   warmup-cosine, clip_by_global_norm, dropout keys from fold_in(key, step)) on the model that
   `fer_jax.models.registry.build_model` makes for `benchmark_config()`: three cached-feature
   modalities face/pose/omnivec (float32[B, 16, 135 | 411 | 256], `linear` tokenizers), so
   49 tokens (CLS + 3 x 16); width 256, depth 4, 8 heads, MLP 1024, dropout 0.1, head dropout 0.1.
   Against `benchmarks/torch_fusion.py` (PyTorch eager, same architecture and optimizer; equal
   parameter counts asserted), and against the same PyTorch twin under `torch.compile` (its own
   model instance with the same initial weights, the same batch; compiled before timing, the
   compile time reported; if compiling fails its row says why; skipped with --no-compile and in
   --quick). After compiling and warming up, rounds alternate the frameworks
   (the order rotates every round); a round times `--steps` consecutive steps (JAX blocks only
   at the end of them, as the training loop does). Reported: medians of the per-step time, and
   the best round (less sensitive to other programs: PyTorch's OpenMP threads slow down far more
   than XLA's when the CPU is oversubscribed).
   A diagnostic row runs the JAX step with every dropout rate 0 (the cost of dropout).
   FLOPs per step are counted analytically: 3 x (forward matmul FLOPs) x B (backward = 2 x
   forward), with forward per clip = 2*T*sum(F_m)*D (tokenizers) + L * (2*N*D*3D (qkv) +
   2*2*N^2*D (scores, weights@v) + 2*N*D^2 (out) + 2*2*N*D*M (MLP)) + 2*D*C (head).
   The tokenizers' input gradient is not needed, so this overcounts the work by ~1%.
3. Input pipeline: a synthetic `dfew/frames64` release is generated and built in a temp dir and
   a `dfew_features` dataset with random features of the three modalities is built from it
   (`tfds_dfew.features.DfewFeatures`). Measured: (a) clips/s the Grain train iterator
   (`fer_jax.input_pipeline.train_dataset`, the config's read threads and prefetch) delivers
   alone; (b) the step time when the iterator feeds the step (next + global_batch + step, as in
   `fer_jax.train`) vs with one fixed in-memory batch, interleaved blocks; each pipeline block
   first runs `prefetch` untimed steps so the prefetch buffer does not hide a slow pipeline.
   Stall = (fed - in-memory) / in-memory.

Other programs sharing the CPU distort everything: the CPU time they took during each part is
measured (/proc/stat minus this process) and printed; above 10% of the cores the numbers are
marked provisional. On a GPU machine JAX runs on the default device and PyTorch on CUDA; the
table names the devices (the numpy matmul always runs on the host).
"""

from __future__ import annotations

import argparse
from fer_jax import train_state, runs
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))

FEATURE_DIMS = {"face": 135, "pose": 411, "omnivec": 256}
NUM_FRAMES = 16


def load_torch_fusion():
    """benchmarks/torch_fusion.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("torch_fusion", Path(__file__).with_name("torch_fusion.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("torch_fusion", module)
    spec.loader.exec_module(module)
    return module


def benchmark_config(batch_size: int = 32, *, width: int = 256, depth: int = 4, num_heads: int = 8,
                     mlp_dim: int = 1024, dropout: float = 0.1, head_dropout: float = 0.1,
                     data_dir: str = "", feature_dims=None):
    """configs/fusion.py with three `linear` modalities reading features face/pose/omnivec."""
    import ml_collections

    from configs import fusion

    c = fusion.get_config("face")
    dims = dict(feature_dims or FEATURE_DIMS)
    c.modalities = ml_collections.ConfigDict({m: {"input": m, "tokenizer": "linear"} for m in dims})
    c.model.width, c.model.depth, c.model.num_heads, c.model.mlp_dim = width, depth, num_heads, mlp_dim
    c.model.dropout, c.model.head_dropout = dropout, head_dropout
    c.batch_size = batch_size
    c.num_classes = 7  # DFEW's seven classes: the benchmark model's head (the config leaves it to the dataset)
    c.dataset.name = "dfew_features/bench"
    c.dataset.data_dir = data_dir or c.dataset.data_dir
    c.progress_bar = False
    return c


def input_shapes(feature_dims=None) -> dict[str, tuple[int, int]]:
    return {m: (NUM_FRAMES, f) for m, f in (feature_dims or FEATURE_DIMS).items()}


def step_flops(config, feature_dims, num_frames: int, batch: int) -> float:
    """Analytic FLOPs of one training step: 3 x forward matmul FLOPs (see the module docstring)."""
    m = config.model
    d, depth, mlp = m.width, m.depth, m.mlp_dim
    n = 1 + num_frames * len(feature_dims)
    tokenizers = sum(2 * num_frames * f * d for f in feature_dims.values())
    block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * mlp
    head = 2 * d * config.get("num_classes", 7)
    return 3.0 * batch * (tokenizers + depth * block + head)


def random_batch(batch: int, seed: int = 0, feature_dims=None) -> dict[str, np.ndarray]:
    """{modality: float32[B, 16, F], 'label': int32[B], 'mask': bool[B]}."""
    rng = np.random.default_rng(seed)
    out = {m: rng.normal(size=(batch, NUM_FRAMES, f)).astype(np.float32) for m, f in (feature_dims or FEATURE_DIMS).items()}
    out["label"] = rng.integers(0, 7, batch).astype(np.int32)
    out["mask"] = np.ones(batch, bool)
    return out


# ----------------------------------------------------------------------------- the two steps


class JaxStep:
    """The project's jitted train step on one fixed device batch; `run(k)` = k steps, then block."""

    def __init__(self, config, feature_dims=None):
        import jax

        from fer_jax import parallel, train

        self.jax, self.parallel = jax, parallel
        self.mesh = parallel.make_mesh()
        graphdef, tx, state = train_state.init(config, runs.model_builder(config, input_shapes(feature_dims)))
        self.params = train_state.param_count(state)
        self.state = jax.device_put(state, parallel.replicated(self.mesh))
        self.trainer = train.make_trainer(config, graphdef, tx, self.mesh)
        self.batch = parallel.global_batch(random_batch(config.batch_size, feature_dims=feature_dims), self.mesh)
        self.base_key = jax.random.key(int(config.seed))
        self.step = 0
        self.stats = None

    def one(self, batch=None):
        key = self.jax.random.fold_in(self.base_key, self.step)
        self.state, self.stats = self.trainer.train_step(self.state, self.batch if batch is None else batch, key)
        self.step += 1

    def sync(self):
        self.jax.block_until_ready((self.state, self.stats))

    def run(self, k: int, batches=None) -> float:
        """Seconds per step over k steps; `batches` (an iterator of numpy batches) feeds them if given."""
        t0 = time.perf_counter()
        for _ in range(k):
            if batches is None:
                self.one()
            else:
                self.one(self.parallel.global_batch(next(batches), self.mesh))
        self.sync()
        return (time.perf_counter() - t0) / k


class TorchStep:
    """benchmarks/torch_fusion.py's step on one fixed batch, eager or under torch.compile; `run(k)` = k steps."""

    def __init__(self, config, device: str, feature_dims=None, compiled: bool = False):
        import torch

        tf = load_torch_fusion()
        self.torch, self.tf, self.config, self.device = torch, tf, config, device
        torch.manual_seed(int(config.seed))
        self.module = tf.from_config(config, feature_dims or FEATURE_DIMS, NUM_FRAMES).to(device)
        self.params = tf.param_count(self.module)
        # the optimizer holds the module's parameters; a compiled wrapper shares them
        self.model = torch.compile(self.module) if compiled else self.module
        self.opt, self.sched = tf.make_optimizer(self.module, config)
        batch = random_batch(config.batch_size, feature_dims=feature_dims)
        self.batch = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
        self.batch["label"] = self.batch["label"].long()

    def run(self, k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            self.tf.train_step(self.model, self.opt, self.sched, self.batch,
                               label_smoothing=float(self.config.loss.label_smoothing),
                               grad_clip_norm=self.config.optimizer.grad_clip_norm)
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()
        return (time.perf_counter() - t0) / k


# ----------------------------------------------------------------------------- parts


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(monotonic s, busy CPU-seconds of the whole machine, CPU-seconds of this process and its children)."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    t = os.times()
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return time.monotonic(), busy, t.user + t.system + t.children_user + t.children_system


def others_cores(start, end) -> float | None:
    """Mean number of cores that other programs (and the hypervisor's steal) used between two snapshots."""
    if start is None or end is None:
        return None
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / max(end[0] - start[0], 1e-9))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)


def matmul_peak(n: int, repeats: int) -> dict:
    """Median GFLOP/s of an n^3 float32 matmul: numpy (host) and jax.jit (default device)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n), dtype=np.float32) for _ in range(2))
    ja, jb = jax.device_put(a), jax.device_put(b)
    mm = jax.jit(jnp.matmul)
    mm(ja, jb).block_until_ready()
    _ = a @ b
    times = {"numpy": [], "jax": []}
    for r in range(repeats):
        for name in (("numpy", "jax") if r % 2 == 0 else ("jax", "numpy")):
            t0 = time.perf_counter()
            if name == "numpy":
                _ = a @ b
            else:
                mm(ja, jb).block_until_ready()
            times[name].append(time.perf_counter() - t0)
    flops = 2.0 * n**3
    return {name: {"gflops": flops / float(np.median(t)) / 1e9, "times_s": t} for name, t in times.items()} | {"n": n}


def time_steps(steps: dict, rounds: int, k: int) -> dict[str, list[float]]:
    """Interleaved rounds over `steps` (name -> run(k) callable), order rotated each round."""
    names = list(steps)
    out = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        if r % 2:
            order = order[::-1]
        for name in order:
            out[name].append(steps[name](k))
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {out[n][-1] * 1e3:.0f} ms" for n in names))
    return out


def build_features_dataset(root: str, num_clips: int, feature_dims=None) -> str:
    """A synthetic dfew/frames64 and a dfew_features/bench with random features under root; returns data_dir."""
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    from tfds_dfew import build, features as features_lib, synthetic

    tfds.display_progress_bar(False)
    absl_logging.set_verbosity(absl_logging.ERROR)
    dims = feature_dims or FEATURE_DIMS
    release_dir, data_dir = os.path.join(root, "DFEW"), os.path.join(root, "tfds")
    synthetic.generate(release_dir, num_clips, seed=0, frame_size=64, max_frames=16, openpose=False, workers=1)
    build.build(release_dir, data_dir, config="frames64", num_workers=1)
    rng = np.random.default_rng(0)

    def compute(records):
        return {k: rng.normal(size=(len(records), NUM_FRAMES, f)).astype(np.float32) for k, f in dims.items()}

    shapes = {k: (NUM_FRAMES, f) for k, f in dims.items()}
    cfg = features_lib.FeaturesConfig(name="bench", version=features_lib.DfewFeatures.VERSION, feature_shapes=shapes,
                                      setup={"source": "dfew/frames64", "generators": {}})
    builder = features_lib.DfewFeatures(config=cfg, data_dir=data_dir, source=tfds.builder("dfew/frames64", data_dir=data_dir),
                                        compute=compute, batch_size=16)
    builder.download_and_prepare(file_format="array_record",
                                 download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return data_dir


def pipeline_part(config, jax_step: JaxStep, *, num_clips: int, alone_batches: int, rounds: int, k: int) -> dict:
    from fer_jax import input_pipeline

    prefetch = int(config.data.get("prefetch", 8))
    with tempfile.TemporaryDirectory(prefix="train_step_bench_") as tmp:
        t0 = time.perf_counter()
        config.dataset.data_dir = build_features_dataset(tmp, num_clips)
        build_s = time.perf_counter() - t0
        n_train = len(input_pipeline.open_source(config, input_pipeline.fold_split(config, "train")))
        log(f"features dataset: {n_train} training clips, built in {build_s:.1f} s")

        # (a) The iterator alone (the first batch includes start-up; not timed).
        it = iter(input_pipeline.train_dataset(config))
        t0 = time.perf_counter()
        next(it)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(alone_batches):
            next(it)
        alone_s = (time.perf_counter() - t0) / alone_batches
        log(f"Grain alone: {config.batch_size / alone_s:.0f} clips/s")

        # (b) The step fed by a fresh iterator vs by a fixed in-memory batch.
        it = iter(input_pipeline.train_dataset(config))
        jax_step.run(2, it)  # the fed step compiles nothing new, but warm the path
        fed, mem = [], []
        for r in range(rounds):
            for kind in (("mem", "fed") if r % 2 == 0 else ("fed", "mem")):
                time.sleep(0.2)  # let the prefetch buffer fill, so its threads are idle in 'mem' blocks
                if kind == "fed":
                    jax_step.run(prefetch, it)
                    fed.append(jax_step.run(k, it))
                else:
                    mem.append(jax_step.run(k))
            log(f"pipeline round {r + 1}/{rounds}: fed {fed[-1] * 1e3:.0f} ms, in-memory {mem[-1] * 1e3:.0f} ms")
        del it
    fed_s, mem_s = float(np.median(fed)), float(np.median(mem))
    return {
        "train_clips": n_train, "build_s": build_s, "first_batch_s": first_s,
        "alone_clips_per_s": config.batch_size / alone_s, "consumed_clips_per_s": config.batch_size / mem_s,
        "fed_step_s": fed_s, "memory_step_s": mem_s, "stall": (fed_s - mem_s) / mem_s,
        "fed_times_s": fed, "memory_times_s": mem, "read_threads": int(config.data.get("read_threads", 4)),
        "prefetch": prefetch,
    }


# ----------------------------------------------------------------------------- report


def busy_note(m: dict) -> str:
    """How much CPU other programs took during the timed parts; numbers are provisional above 10% of the cores."""
    others = {k: v for k, v in m["other_programs_cores"].items() if v is not None}
    if not others:
        return "Other programs' CPU use unknown (no /proc/stat): treat the numbers as provisional."
    worst = max(others.values())
    text = "Other programs used " + ", ".join(f"{v:.2f} cores during the {k} part" for k, v in others.items())
    if worst > 0.1 * m["cpu_count"]:
        return text + " -- the CPU was shared: numbers are provisional until a quiet run."
    return text + " (a quiet run)."


def step_row(label: str, st: dict, extra: str = "") -> str:
    return (f"| {label} | {st['clips_per_s']:.1f} clips/s | {st['median_s'] * 1e3:.0f} ms/step (IQR "
            f"{st['iqr_s'] * 1e3:.0f}), {st['gflops']:.0f} GFLOP/s; best round {st['best_clips_per_s']:.1f} clips/s{extra} |")


def markdown(r: dict) -> str:
    m = r["meta"]
    peak = r["matmul"]
    n = peak["n"]
    s = r["steps"]
    jx, pt = s["jax"], s["torch"]
    lines = [
        f"Fusion transformer train step: B={m['batch']}, {m['tokens']} tokens, D={m['width']}, {m['depth']} layers, "
        f"{m['heads']} heads, MLP {m['mlp_dim']}, {m['params'] / 1e6:.2f} M params (both), dropout {m['dropout']}, AdamW. "
        f"JAX on {m['jax_device']}, PyTorch on {m['torch_device']} ({m['torch_threads']} threads), "
        f"{m['cpu_count']} CPU cores; load average {m['load_before']:.2f} before this run. {busy_note(m)}"
        + (" --quick: a smoke test, not a measurement." if m["quick"] else ""),
        "",
        "| measurement | value | detail |",
        "|---|---:|---|",
        f"| matmul peak, numpy {n}^3 float32 | {peak['numpy']['gflops']:.0f} GFLOP/s | host, median of {len(peak['numpy']['times_s'])} |",
        f"| matmul peak, jax.jit {n}^3 float32 | {peak['jax']['gflops']:.0f} GFLOP/s | {m['jax_device']} |",
        step_row("JAX train step (fer_jax.train)", jx),
        step_row("PyTorch eager train step", pt),
        f"| JAX / PyTorch clips/s | {r['ratio']:.2f}x | best rounds: {r['ratio_best']:.2f}x; target >= 1.2x: "
        f"{'met' if r['ratio'] >= 1.2 else 'not met'} |",
    ]
    if "torch_compile" in s:
        tc = s["torch_compile"]
        lines += [step_row("PyTorch torch.compile train step", tc,
                           f"; compiled in {r['torch_compile_s']:.0f} s; {tc['clips_per_s'] / pt['clips_per_s']:.2f}x eager"),
                  f"| JAX / torch.compile clips/s | {r['ratio_compile']:.2f}x | best rounds: "
                  f"{r['ratio_compile_best']:.2f}x |"]
    elif r.get("torch_compile_error"):
        lines.append(f"| PyTorch torch.compile train step | not measured | {r['torch_compile_error']} |")
    lines += [
        f"| JAX step FLOP/s / matmul peak | {100 * r['peak_fraction']:.0f}% | {jx['gflops']:.0f} GFLOP/s of numpy's "
        f"{peak['numpy']['gflops']:.0f} (the issue's peak); target >= 65%: "
        f"{'met' if r['peak_fraction'] >= 0.65 else 'not met'}; of jax.jit's {peak['jax']['gflops']:.0f}: "
        f"{100 * jx['gflops'] / peak['jax']['gflops']:.0f}% |",
        f"| PyTorch step FLOP/s / matmul peak | {100 * pt['gflops'] / peak['numpy']['gflops']:.0f}% | "
        f"of jax.jit's: {100 * pt['gflops'] / peak['jax']['gflops']:.0f}% |",
    ]
    if "jax_nodropout" in s:
        nd = s["jax_nodropout"]
        lines.append(step_row("JAX train step, all dropout 0 (diagnostic)", nd,
                              f"; dropout costs {100 * (1 - nd['median_s'] / jx['median_s']):.0f}% of the JAX step"))
    p = r.get("pipeline")
    if p:
        lines += [
            f"| Grain train iterator alone | {p['alone_clips_per_s']:.0f} clips/s | "
            f"{p['alone_clips_per_s'] / p['consumed_clips_per_s']:.1f}x what the step consumes "
            f"({p['consumed_clips_per_s']:.0f} clips/s); {p['read_threads']} read threads, prefetch {p['prefetch']} |",
            f"| JAX step fed by Grain vs in-memory | {p['fed_step_s'] * 1e3:.0f} vs {p['memory_step_s'] * 1e3:.0f} ms | "
            f"input stall {100 * p['stall']:.1f}% of the step; target < 5%: {'met' if p['stall'] < 0.05 else 'not met'} |",
        ]
    lines.append(f"\nFLOPs per step (analytic, 3 x forward matmuls): {r['flops_per_step'] / 1e9:.2f} GFLOP.")
    return "\n".join(lines)


def summarize(times: list[float], batch: int, flops: float) -> dict:
    t = np.asarray(times)
    med = float(np.median(t))
    return {"median_s": med, "iqr_s": float(np.percentile(t, 75) - np.percentile(t, 25)), "clips_per_s": batch / med,
            "gflops": flops / med / 1e9, "best_clips_per_s": batch / float(t.min()), "times_s": times}


def main(args) -> dict:
    quick = args.quick
    rounds = args.rounds or (3 if quick else 15)
    k = args.steps or (2 if quick else 5)
    load_before = os.getloadavg()[0]
    loads = [load_before]

    import jax
    import torch

    jax_device = str(jax.devices()[0].device_kind) + f" ({jax.default_backend()})"
    torch_device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"

    log("matmul peak ...")
    snap = cpu_snapshot()
    peak = matmul_peak(4096, 3 if quick else 7)
    others = {"matmul": others_cores(snap, cpu_snapshot())}
    loads.append(os.getloadavg()[0])

    config = benchmark_config(args.batch, num_heads=args.heads)
    flops = step_flops(config, FEATURE_DIMS, NUM_FRAMES, args.batch)
    log("building and compiling the JAX step ...")
    t0 = time.perf_counter()
    jstep = JaxStep(config)
    jstep.run(1)
    compile_s = time.perf_counter() - t0
    tstep = TorchStep(config, torch_device)
    if jstep.params != tstep.params:
        raise AssertionError(f"parameter counts differ: JAX {jstep.params:,} vs PyTorch {tstep.params:,}")
    steps = {"jax": jstep.run, "torch": tstep.run}
    compile_info = {}
    if args.no_compile or quick:
        compile_info["torch_compile_error"] = "skipped (--no-compile or --quick)"
    else:
        log("compiling the PyTorch step with torch.compile ...")
        t0 = time.perf_counter()
        try:
            cstep = TorchStep(config, torch_device, compiled=True)
            cstep.run(2)  # compiles forward and backward (the first steps); failures show here
            steps["torch_compile"] = cstep.run
            compile_info["torch_compile_s"] = time.perf_counter() - t0
        except Exception as e:  # an install without a working compiler: say why, measure the rest
            first = (str(e).strip().splitlines() or [""])[0]
            compile_info["torch_compile_error"] = f"torch.compile failed: {type(e).__name__}: {first}"[:300]
            log(compile_info["torch_compile_error"])
    if not quick and not args.no_diagnostics:
        nd = JaxStep(benchmark_config(args.batch, num_heads=args.heads, dropout=0.0, head_dropout=0.0))
        steps["jax_nodropout"] = nd.run
    for run in steps.values():  # compile / warm up
        run(2)
    loads.append(os.getloadavg()[0])
    snap = cpu_snapshot()
    times = time_steps(steps, rounds, k)
    others["steps"] = others_cores(snap, cpu_snapshot())
    loads.append(os.getloadavg()[0])
    stats = {name: summarize(t, args.batch, flops) for name, t in times.items()}
    result = {
        "matmul": peak,
        "steps": stats,
        "ratio": stats["jax"]["clips_per_s"] / stats["torch"]["clips_per_s"],
        "ratio_best": stats["jax"]["best_clips_per_s"] / stats["torch"]["best_clips_per_s"],
        "peak_gflops": peak["numpy"]["gflops"],
        "peak_fraction": stats["jax"]["gflops"] / peak["numpy"]["gflops"],
        "flops_per_step": flops,
        "jax_compile_s": compile_s,
        **compile_info,
    }
    if "torch_compile" in stats:
        result["ratio_compile"] = stats["jax"]["clips_per_s"] / stats["torch_compile"]["clips_per_s"]
        result["ratio_compile_best"] = stats["jax"]["best_clips_per_s"] / stats["torch_compile"]["best_clips_per_s"]
    if not args.no_pipeline:
        log("input pipeline ...")
        snap = cpu_snapshot()
        result["pipeline"] = pipeline_part(config, jstep, num_clips=40 if quick else 200,
                                           alone_batches=10 if quick else 60, rounds=2 if quick else 6,
                                           k=4 if quick else 16)
        others["pipeline"] = others_cores(snap, cpu_snapshot())
        loads.append(os.getloadavg()[0])
    result["meta"] = {
        "batch": args.batch, "tokens": 1 + NUM_FRAMES * len(FEATURE_DIMS), "width": config.model.width,
        "depth": config.model.depth, "heads": config.model.num_heads, "mlp_dim": config.model.mlp_dim,
        "dropout": config.model.dropout, "head_dropout": config.model.head_dropout, "params": jstep.params,
        "rounds": rounds, "steps_per_round": k, "quick": quick,
        "jax_device": jax_device, "torch_device": torch_device, "torch_threads": torch.get_num_threads(),
        "jax": jax.__version__, "torch": torch.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "load_before": load_before, "load_after": os.getloadavg()[0], "load_during": loads,
        "other_programs_cores": others,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(markdown(result))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"train_step_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwritten: {path}", file=sys.stderr)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test (< 1 min): few rounds, a smaller dataset, no diagnostics")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--rounds", type=int, default=0, help="interleaved timing rounds (default 15, quick 3)")
    p.add_argument("--steps", type=int, default=0, help="steps per round (default 5, quick 2)")
    p.add_argument("--no-pipeline", action="store_true", help="skip the input-pipeline part")
    p.add_argument("--no-diagnostics", action="store_true", help="skip the dropout-0 JAX row")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender (--quick skips it too)")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
