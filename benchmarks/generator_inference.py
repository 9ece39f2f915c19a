"""Benchmark: generator feature-extraction inference frames/s, Flax NNX (XLA CPU) vs PyTorch eager.

    python benchmarks/generator_inference.py [--batch 32 --size 112 --repeats 15]
    python benchmarks/generator_inference.py --model vit_b16 [--batch 8 --repeats 10]

--model resnet18 (default) measures the ResNet-18 variants below; --model vit_b16 measures
CLIP ViT-B/16 image features at 224 px (`encode_images`, float32[B, 224, 224, 3] -> [B, 512],
fer_jax.models.vit with QuickGELU, jit) against open_clip's `encode_image` (ViT-B-16-quickgelu,
eager, inference_mode), the same random weights (LayerNorms and biases randomised too) read by
each side from the same file, the same input; there are no BatchNorms to fold, so the
`flax_folded*` variants do not apply to it.

Measures `features(x)` (global-average-pooled 512-d output, x: float32[B, H, W, 3]) for:
  torch_eager            torchvision resnet18, eager, NCHW, inference_mode
  torch_channels_last    the same with channels_last weights and input
  torch_compile          torch.compile of the NCHW model (skipped if compiling fails or is slow)
  flax                   fer_jax ResNet, jax.jit, float32, default XLA flags
  flax_folded            the same with BatchNorm folded into the convs (fold_batchnorm)
  flax*_<name>           the Flax variants under other XLA CPU flags (XLA_VARIANTS, --xla-variant);
                         no_ynn is fer_jax.models.resnet.CPU_INFERENCE_XLA_FLAGS
  flax_steps_no_ynn      flax_no_ynn computed 32 frames a step inside the jitted call
                         (fer_jax.models.generators.in_steps): what extract and predict run on the CPU

Every variant runs in its own worker process (XLA flags are per process), all load the same
random weights (torchvision init, randomised BatchNorm statistics) and see the same input.
The main process interleaves single timed calls over the workers round-robin (rotating the
order each round), so load from other programs hits every variant alike; it reports medians,
the frames/s ratio to torch_eager, and each variant's max relative difference from
torch_eager's features (a wrong compilation shows up there). Results: a Markdown table on
stdout and JSON in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from workers import Worker, interleave, send, serve  # benchmarks/workers.py: a script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PREFIX = "@@"

# Named XLA CPU flag sets; each gives a `flax_<name>` and a `flax_folded_<name>` variant.
XLA_VARIANTS = {
    "ynn_eltwise": "--xla_cpu_experimental_ynn_fusion_type=+eltwise",  # YNNPACK also for elementwise ops
    "no_ynn": "--xla_cpu_experimental_ynn_fusion_type=",  # no YNNPACK fusions: Eigen convolutions
}
TORCH_VARIANTS = ("torch_eager", "torch_channels_last", "torch_compile")
STEP = 32  # frames per step of flax_steps_no_ynn (fer_jax.models.generators.CPU_FRAMES_PER_STEP)
MODEL_TITLES = {"resnet18": "ResNet-18", "vit_b16": "CLIP ViT-B/16 (QuickGELU, open_clip layout)"}


def all_variants(xla_variants: dict[str, str], model: str = "resnet18") -> dict[str, dict]:
    """name -> {framework, folded, xla_flags}."""
    out = {name: {"framework": "torch", "folded": False, "xla_flags": ""} for name in TORCH_VARIANTS}
    out["flax"] = {"framework": "flax", "folded": False, "xla_flags": ""}
    out["flax_folded"] = {"framework": "flax", "folded": True, "xla_flags": ""}
    for name, flags in xla_variants.items():
        out[f"flax_{name}"] = {"framework": "flax", "folded": False, "xla_flags": flags}
        out[f"flax_folded_{name}"] = {"framework": "flax", "folded": True, "xla_flags": flags}
    if "no_ynn" in xla_variants:  # what extract and predict run on the CPU: their flag + 32-frame steps
        out["flax_steps_no_ynn"] = {"framework": "flax", "folded": False, "xla_flags": xla_variants["no_ynn"],
                                    "steps": STEP}
    if model != "resnet18":  # BatchNorm folding is a ResNet variant
        out = {k: v for k, v in out.items() if not v["folded"]}
    return out


# ----------------------------------------------------------------------------- workers


def _torch_worker(variant: str, workdir: Path, warmup: int, model_name: str = "resnet18"):
    import torch
    import torchvision

    if model_name == "vit_b16":
        import open_clip

        clip = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True)
        clip.load_state_dict(torch.load(workdir / "weights.pth", map_location="cpu", weights_only=True))
        model = clip.visual.eval()  # encode_image(x) is visual(x)
    else:
        model = torchvision.models.resnet18()
        model.load_state_dict(torch.load(workdir / "weights.pth", map_location="cpu", weights_only=True))
        model.fc = torch.nn.Identity()
        model.eval()
    x = torch.from_numpy(np.ascontiguousarray(np.load(workdir / "x.npy").transpose(0, 3, 1, 2)))
    if variant == "torch_channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if variant == "torch_compile":
        model = torch.compile(model)

    def step():
        with torch.inference_mode():
            return model(x)

    t0 = time.perf_counter()
    out = step()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    return step, out.numpy(), first, {"torch": torch.__version__, "threads": torch.get_num_threads()}


def _flax_worker(variant: str, folded: bool, workdir: Path, warmup: int, model_name: str = "resnet18",
                 steps: int = 0):
    import jax
    from flax import nnx

    sys.path.insert(0, str(REPO))
    if model_name == "vit_b16":
        from fer_jax.models.vit import clip_vit_b16
        from fer_jax.weights.vit_loaders import load_openclip

        model = nnx.eval_shape(lambda: clip_vit_b16(rngs=nnx.Rngs(0)))
        load_openclip(model, workdir / "weights.safetensors", strict=True)
        graphdef, state = nnx.split(model)

        def features_of(s, x):
            return nnx.merge(graphdef, s).encode_images(x)
    else:
        from fer_jax.models.resnet import fold_batchnorm, resnet18
        from fer_jax.weights.torchvision import load_torchvision

        model = nnx.eval_shape(lambda: resnet18(num_classes=None, rngs=nnx.Rngs(0)))
        load_torchvision(model, workdir / "weights.npz", strict=True)
        if folded:
            model = fold_batchnorm(model)
        graphdef, state = nnx.split(model)

        def features_of(s, x):
            return nnx.merge(graphdef, s).features(x)
    if steps:
        from fer_jax.models import generators

        features = jax.jit(lambda s, x: generators.in_steps(lambda c: features_of(s, c), x, steps))
    else:
        features = jax.jit(features_of)
    x = jax.device_put(np.load(workdir / "x.npy"))

    def step():
        return features(state, x).block_until_ready()

    t0 = time.perf_counter()
    out = step()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    return step, np.asarray(out), first, {"jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}


def worker_main(args) -> None:
    """Build one variant, report READY, then time one call per 'run' line on stdin."""
    spec = all_variants(dict(XLA_VARIANTS, **dict(args.xla_variant)), args.model)[args.worker]
    workdir = Path(args.workdir)
    try:
        if spec["framework"] == "torch":
            step, out, first, info = _torch_worker(args.worker, workdir, args.warmup, args.model)
        else:
            step, out, first, info = _flax_worker(args.worker, spec["folded"], workdir, args.warmup, args.model,
                                                  spec.get("steps", 0))
    except Exception as e:  # reported to the main process, which skips the variant
        send("failed", error=f"{type(e).__name__}: {e}"[:500])
        return
    np.save(workdir / f"out_{args.worker}.npy", out)
    serve(step, first, info)


# ----------------------------------------------------------------------------- main process


def start_worker(name: str, spec: dict, args, workdir: Path) -> Worker:
    """A variant's worker process, under its own XLA flags (they are per process)."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if spec["xla_flags"]:
        env["XLA_FLAGS"] = spec["xla_flags"]
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--workdir", str(workdir)]
    cmd += ["--warmup", str(args.warmup), "--model", args.model]
    for vname, flags in args.xla_variant:
        cmd += ["--xla-variant", f"{vname}={flags}"]
    return Worker(name, cmd, env, workdir)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()




def prepare_vit_b16(workdir: Path, batch: int, seed: int) -> None:
    """Random open_clip ViT-B-16 (QuickGELU) weights, LayerNorms and biases randomised too: weights.pth
    (torch.save, whole CLIP model) and weights.safetensors (its image tower), and a random 224 px input."""
    import open_clip
    import torch
    from safetensors.numpy import save_file

    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True)
    with torch.no_grad():
        for name, p in model.visual.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    torch.save(model.state_dict(), workdir / "weights.pth")
    save_file({k: v.numpy() for k, v in model.visual.state_dict().items()}, str(workdir / "weights.safetensors"))
    x = np.random.default_rng(seed).normal(size=(batch, 224, 224, 3)).astype(np.float32)
    np.save(workdir / "x.npy", x)


def prepare(workdir: Path, batch: int, size: int, seed: int, model: str = "resnet18") -> None:
    """Random torchvision resnet18 weights (BN statistics randomised too) and a random input."""
    if model == "vit_b16":
        return prepare_vit_b16(workdir, batch, seed)
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    state = model.state_dict()
    torch.save(state, workdir / "weights.pth")
    np.savez(workdir / "weights.npz", **{k: v.numpy() for k, v in state.items()})
    x = np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)
    np.save(workdir / "x.npy", x)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"{MODEL_TITLES[meta.get('model', 'resnet18')]} features, batch {meta['batch']}, "
        f"{meta['size']}x{meta['size']}, float32, "
        f"{meta['cpu_count']} CPU cores ({meta['machine']}), {meta['repeats']} interleaved repeats (median); "
        f"load average {meta['load_before']:.2f} before, {min(meta['load_during']):.2f}-{max(meta['load_during']):.2f} "
        "while timing (this benchmark alone adds ~1)"
        + (
            f"; other programs used {meta['other_programs_cpu_cores']:.2f} of the {meta['cpu_count']} cores meanwhile"
            if meta["other_programs_cpu_cores"] is not None
            else ""
        ),
        "",
        "| variant | frames/s | x torch_eager | median ms | IQR ms | first call s | max rel diff | XLA flags |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    busy = meta["other_programs_cpu_cores"]
    if (busy is not None and busy > 0.1) or (busy is None and max(meta["load_during"]) > 1.6):
        lines[1:1] = ["", "**Other programs were using the CPU during this run: treat these numbers as provisional.**"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['variant']} | skipped: {r['error'][:80]} | | | | | | |")
            continue
        lines.append(
            f"| {r['variant']} | {r['frames_per_s']:.1f} | {r['ratio_to_torch_eager']:.2f} | {r['median_s'] * 1e3:.1f} | "
            f"{r['iqr_s'] * 1e3:.1f} | {r['first_call_s']:.1f} | {r['max_rel_diff']:.1e} | {r['xla_flags'] or '-'} |"
        )
    return "\n".join(lines)


def main(args) -> None:
    if args.model == "vit_b16":
        args.size = 224  # the CLIP tower's input size
    variants = all_variants(dict(XLA_VARIANTS, **dict(args.xla_variant)), args.model)
    names = [n for n in variants if n in args.variants] if args.variants else list(variants)
    if args.no_compile and "torch_compile" in names:
        names.remove("torch_compile")
    if "torch_eager" not in names:
        names.insert(0, "torch_eager")
    with tempfile.TemporaryDirectory(prefix="generator_inference_") as tmp:
        workdir = Path(tmp)
        prepare(workdir, args.batch, args.size, args.seed, args.model)
        load_before = os.getloadavg()[0]
        workers, rows = {}, {}
        for name in names:  # one at a time, so that compile times are not disturbed by each other
            print(f"starting {name} ...", file=sys.stderr, flush=True)
            w = start_worker(name, variants[name], args, workdir)
            msg = w.receive(args.compile_timeout if name == "torch_compile" else 600)
            row = {"variant": name, "xla_flags": variants[name]["xla_flags"], "folded": variants[name]["folded"]}
            if msg["kind"] != "ready":
                row["error"] = msg.get("error", "unknown")
                w.close()
            else:
                row.update(first_call_s=msg["first_call_s"], info=msg["info"], times_s=[])
                workers[name] = w
            rows[name] = row
        if "torch_eager" not in workers:
            raise SystemExit(f"torch_eager failed: {rows['torch_eager'].get('error')}")
        live = list(workers)
        times, loads, other_cpu = interleave(workers, args.repeats)
        for name in live:
            rows[name]["times_s"] = times[name]
        for w in workers.values():
            w.close()
        ref = np.load(workdir / "out_torch_eager.npy").astype(np.float64)
        for name in live:
            t = np.asarray(rows[name]["times_s"])
            out = np.load(workdir / f"out_{name}.npy").astype(np.float64)
            rows[name].update(
                median_s=float(np.median(t)),
                iqr_s=float(np.percentile(t, 75) - np.percentile(t, 25)),
                frames_per_s=args.batch / float(np.median(t)),
                max_rel_diff=float(np.abs(out - ref).max() / np.abs(ref).max()),
            )
        eager = rows["torch_eager"]["frames_per_s"]
        for name in live:
            rows[name]["ratio_to_torch_eager"] = rows[name]["frames_per_s"] / eager
    meta = {
        "model": args.model,
        "batch": args.batch,
        "size": args.size,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "machine": _cpu_model(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "load_during": loads,
        "other_programs_cpu_cores": other_cpu,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    table = markdown(list(rows.values()), meta)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "" if args.model == "resnet18" else f"_{args.model}"
    path = RESULTS / f"generator_inference{tag}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"meta": meta, "results": list(rows.values())}, indent=1))
    print(f"\nwritten: {path}", file=sys.stderr)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(MODEL_TITLES), default="resnet18",
                   help="resnet18, or vit_b16: CLIP ViT-B/16 image features at 224 px (--size is ignored)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--repeats", type=int, default=15, help="timed calls per variant, interleaved")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per variant after the first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", type=lambda s: s.split(","), default=None, help="comma-separated subset")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compile-timeout", type=float, default=300.0, help="seconds torch.compile may take")
    p.add_argument(
        "--xla-variant",
        action="append",
        default=[],
        type=lambda s: tuple(s.split("=", 1)),
        metavar="NAME=FLAGS",
        help="extra Flax variants flax_NAME / flax_folded_NAME run under XLA_FLAGS=FLAGS",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    _args = parse_args()
    if _args.worker:
        worker_main(_args)
    else:
        main(_args)
