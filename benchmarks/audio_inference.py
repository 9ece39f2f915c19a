"""Benchmark: wav2vec 2.0 base speech-encoder inference clips/s, Flax NNX (XLA CPU) vs PyTorch (transformers).

    python benchmarks/audio_inference.py [--batch 8 --seconds 4 --repeats 5]
    python benchmarks/audio_inference.py --quick            # tiny sizes: a smoke test

Input: a batch of B clips of S seconds of 16 kHz mono audio, float32[B, 16000 * S] (tones + noise,
each clip scaled to zero mean and unit variance, as transformers' feature extractor and our
SpeechGenerator do), unpadded. Weights: one random transformers `Wav2Vec2Model` with the base
config (LayerNorms, biases and the positional conv's weight-norm gains randomised too, so that a
loader mistake cannot hide behind an identity), written with save_pretrained to a temporary folder
and read from there by every variant: by transformers' from_pretrained and by our
`load_speech_encoder` (strict) into `wav2vec2_base`.

  torch_eager                     transformers Wav2Vec2Model, eager, inference_mode, all CPU threads:
                                  last_hidden_state float32[B, N, 768] (N ~ 50 per second)
  torch_compile                   torch.compile of the same (skipped with --no-compile; reported when it
                                  fails or takes longer than --compile-timeout)
  jax_encoder                     fer_jax Wav2Vec2Encoder, jax.jit, last hidden state; XLA's default flags
  jax_generator                   fer_jax SpeechGenerator over it, jax.jit: per-clip normalisation, the
                                  encoder, pooling into 16 time slices -> float32[B, 16, 768]
  jax_*_inference_flags           the two above under the XLA flags the inference CLIs set
                                  (fer_jax.xla_defaults.use_inference_defaults)

Every variant runs in its own worker process (XLA flags are per process; benchmarks/workers.py).
Before anything is timed, each JAX variant's output is compared with torch_eager's (the generator's
with torch_eager's last hidden state pooled into 16 slices here, in numpy): a max relative
difference above --parity (1e-4) stops the benchmark. The main process then interleaves single
timed calls over the workers round-robin (rotating the order each round), so load from other
programs hits every variant alike, and reports medians, clips/s, audio seconds per second and the
ratio to torch_eager. Output: the CPU line (benchmarks/machine.py) and a Markdown table on stdout,
JSON in benchmarks/results/ (or --results-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import machine  # benchmarks/machine.py and workers.py: a script's folder is on sys.path
from workers import Worker, interleave, send, serve

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SAMPLE_RATE = 16_000
NUM_SLICES = 16
# name -> (framework, what it computes, whether it runs under the inference XLA flags)
VARIANTS = {
    "torch_eager": ("torch", "encoder", False),
    "torch_compile": ("torch", "encoder", False),
    "jax_encoder": ("jax", "encoder", False),
    "jax_encoder_inference_flags": ("jax", "encoder", True),
    "jax_generator": ("jax", "generator", False),
    "jax_generator_inference_flags": ("jax", "generator", True),
}
QUICK = {"batch": 1, "seconds": 1.0, "repeats": 2, "warmup": 0}


# ----------------------------------------------------------------------------- worker processes


def _torch_variant(name: str, workdir: Path, warmup: int):
    import torch
    from transformers import Wav2Vec2Model

    torch.set_num_threads(os.cpu_count() or 1)
    model = Wav2Vec2Model.from_pretrained(workdir / "wav2vec2-base").eval()
    if name == "torch_compile":
        model = torch.compile(model)
    x = torch.from_numpy(np.load(workdir / "x.npy"))

    def call():
        with torch.inference_mode():
            return model(x).last_hidden_state

    start = time.perf_counter()
    out = call().numpy()
    first = time.perf_counter() - start
    for _ in range(warmup):
        call()
    return call, out, first, {"torch": torch.__version__, "threads": torch.get_num_threads()}


def _jax_variant(name: str, workdir: Path, warmup: int):
    import jax
    from flax import nnx

    sys.path.insert(0, str(REPO))
    from fer_jax.models.wav2vec2 import SpeechGenerator, wav2vec2_base
    from fer_jax.weights.audio_loaders import load_speech_encoder

    model = nnx.eval_shape(lambda: wav2vec2_base(rngs=nnx.Rngs(0)))
    report = load_speech_encoder(model, workdir / "wav2vec2-base", strict=True)
    if not report.ok:
        raise RuntimeError(f"load_speech_encoder: {report}")
    if VARIANTS[name][1] == "generator":
        model = SpeechGenerator(model)
    graphdef, state = nnx.split(model)
    if VARIANTS[name][1] == "generator":
        compute = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)[0])  # (features, mask): the features
    else:
        compute = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    x = jax.device_put(np.load(workdir / "x.npy"))

    def call():
        return compute(state, x).block_until_ready()

    start = time.perf_counter()
    out = np.asarray(call())
    first = time.perf_counter() - start
    for _ in range(warmup):
        call()
    return call, out, first, {"jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}


def worker_main(args) -> None:
    """Builds one variant, saves its output, reports 'ready', then times one call per 'run' line on stdin."""
    workdir = Path(args.workdir)
    build = _torch_variant if VARIANTS[args.worker][0] == "torch" else _jax_variant
    try:
        call, out, first, info = build(args.worker, workdir, args.warmup)
    except Exception as err:  # the main process reports the variant as skipped
        send("failed", error=f"{type(err).__name__}: {err}"[:400])
        return
    np.save(workdir / f"out_{args.worker}.npy", out)
    serve(call, first, info)


# ----------------------------------------------------------------------------- main process


def inference_flags() -> str:
    """The XLA_FLAGS the inference CLIs set (asked of fer_jax.xla_defaults for an environment without XLA_FLAGS)."""
    sys.path.insert(0, str(REPO))
    from fer_jax import xla_defaults

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return xla_defaults.use_inference_defaults(env, log=lambda _line: None) or ""


def start_worker(name: str, args, workdir: Path, flags: str) -> Worker:
    """A variant's worker process: XLA's defaults, or the inference flags (XLA_FLAGS is read once per process)."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if VARIANTS[name][2] and flags:
        env["XLA_FLAGS"] = flags
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--workdir", str(workdir),
           "--warmup", str(args.warmup)]
    return Worker(name, cmd, env, workdir)




def remove_stale_workdirs() -> None:
    """Deletes the work folders (~400 MB of weights each) of earlier runs that were killed (run_all's time limit
    kills with SIGKILL, which skips TemporaryDirectory's cleanup): audio_inference_<pid>_* of a pid that is gone."""
    for folder in Path(tempfile.gettempdir()).glob("audio_inference_*_*"):
        try:
            pid = int(folder.name.split("_")[2])
            if folder.stat().st_uid != os.getuid():
                continue
            os.kill(pid, 0)  # still running: leave it alone
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, IndexError, OSError):
            continue


def speech(batch: int, samples: int, seed: int) -> np.ndarray:
    """Harmonic tones with a slow envelope plus noise, each clip at zero mean and unit variance: float32[B, S]."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SAMPLE_RATE
    clips = []
    for i in range(batch):
        f0 = rng.uniform(90.0, 300.0)
        tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 6))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1.0, 4.0) * t)
        y = envelope * tone + 0.3 * rng.normal(size=samples)
        clips.append((y - y.mean()) / y.std())
    return np.stack(clips).astype(np.float32)


def prepare(workdir: Path, batch: int, samples: int, seed: int) -> None:
    """A random transformers Wav2Vec2Model (base config, non-trivial norms, biases and weight-norm gains),
    save_pretrained to workdir/wav2vec2-base, and the input workdir/x.npy."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    model = Wav2Vec2Model(Wav2Vec2Config()).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
            if name.endswith(("original0", "weight_g")):  # the positional conv's weight-norm gain
                p.mul_(1.0 + 0.5 * torch.rand(p.shape, generator=gen))
    model.save_pretrained(workdir / "wav2vec2-base")
    np.save(workdir / "x.npy", speech(batch, samples, seed))


def pool_reference(hidden: np.ndarray) -> np.ndarray:
    """[B, N, D] -> [B, 16, D]: each frame to the slice holding its centre, a slice without frames takes the
    frame under its centre (pool_to_slices' contract, written independently here)."""
    n = hidden.shape[1]
    owner = np.floor(NUM_SLICES * (np.arange(n) + 0.5) / n).astype(int)
    out = np.zeros((hidden.shape[0], NUM_SLICES, hidden.shape[2]))
    for s in range(NUM_SLICES):
        rows = owner == s
        out[:, s] = hidden[:, rows].mean(1) if rows.any() else hidden[:, int(np.floor((s + 0.5) * n / NUM_SLICES))]
    return out


def rel_diff(out: np.ndarray, ref: np.ndarray) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out.shape != ref.shape:
        return float("inf")
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def markdown(rows: list[dict], meta: dict) -> str:
    cpu = meta["cpu"]
    avx = {True: "with AVX-512", False: "no AVX-512", None: "AVX-512 unknown"}[cpu["avx512"]]
    other = meta["other_programs_cpu_cores"]
    lines = [
        f"CPU: {cpu['model']}, {avx}, {meta['cpu_count']} cores",
        "",
        f"wav2vec 2.0 base inference (random weights, transformers layout), batch {meta['batch']} x "
        f"{meta['seconds']:g} s of 16 kHz audio ({meta['frames']} frames per clip), float32; "
        f"{meta['repeats']} interleaved repeats (median); load average {meta['load_before']:.2f} before, "
        f"{min(meta['load_during']):.2f}-{max(meta['load_during']):.2f} while timing (this benchmark adds ~1)"
        + (f"; other programs used {other:.2f} of the {meta['cpu_count']} cores meanwhile" if other is not None else ""),
        "",
        "| variant | output | clips/s | audio s/s | x torch_eager | median ms | IQR ms | first call s "
        "| max rel diff | XLA flags |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    if (other is not None and other > 0.1) or (other is None and max(meta["load_during"]) > 1.6):
        lines[4:4] = ["**Other programs were using the CPU during this run: treat these numbers as provisional.**", ""]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | skipped: {r['error'][:100]} | | | | | | | | |")
            continue
        output = "pooled [B, 16, 768]" if r["output"] == "generator" else "last hidden [B, N, 768]"
        lines.append(
            f"| {r['variant']} | {output} | {r['clips_per_s']:.2f} | {r['audio_s_per_s']:.1f} | "
            f"{r['ratio_to_torch_eager']:.2f} | {r['median_s'] * 1e3:.0f} | {r['iqr_s'] * 1e3:.0f} | "
            f"{r['first_call_s']:.1f} | {r['max_rel_diff']:.1e} | {r['xla_flags'] or '-'} |")
    return "\n".join(lines)


def main(args) -> dict:
    names = [n for n in VARIANTS if n in (args.variants or VARIANTS)]
    if args.no_compile and "torch_compile" in names:
        names.remove("torch_compile")
    if "torch_eager" not in names:
        names.insert(0, "torch_eager")
    samples = int(round(args.seconds * SAMPLE_RATE))
    flags = inference_flags()
    cpu = machine.cpu_info()
    print(f"CPU: {cpu['model']}, AVX-512: {cpu['avx512']}, {os.cpu_count()} cores; inference XLA flags: "
          f"{flags or '(none: JAX would not run on the CPU)'}", file=sys.stderr, flush=True)
    rows: dict[str, dict] = {}
    remove_stale_workdirs()
    with tempfile.TemporaryDirectory(prefix=f"audio_inference_{os.getpid()}_") as tmp:
        workdir = Path(tmp)
        prepare(workdir, args.batch, samples, args.seed)
        load_before = os.getloadavg()[0]
        workers: dict[str, Worker] = {}
        for name in names:  # started one at a time so that compilations do not disturb each other
            print(f"starting {name} ...", file=sys.stderr, flush=True)
            worker = start_worker(name, args, workdir, flags)
            msg = worker.receive(args.compile_timeout if name == "torch_compile" else 900)
            framework, output, use_flags = VARIANTS[name]
            rows[name] = {"variant": name, "output": output,
                          "xla_flags": (flags if use_flags else "") if framework == "jax" else ""}
            if msg["kind"] == "ready":
                rows[name].update(first_call_s=msg["first_call_s"], info=msg["info"], times_s=[])
                workers[name] = worker
            else:
                rows[name]["error"] = msg.get("error", "unknown")
                worker.close()
        if "torch_eager" not in workers:
            for worker in workers.values():
                worker.close()
            raise SystemExit(f"torch_eager failed: {rows['torch_eager']['error']}")
        # parity first: nothing is timed unless every JAX variant computes what transformers computes
        reference = np.load(workdir / "out_torch_eager.npy").astype(np.float64)
        pooled = pool_reference(reference)
        for name in workers:
            out = np.load(workdir / f"out_{name}.npy")
            rows[name]["max_rel_diff"] = rel_diff(out, pooled if rows[name]["output"] == "generator" else reference)
        bad = {n: rows[n]["max_rel_diff"] for n in workers
               if VARIANTS[n][0] == "jax" and not rows[n]["max_rel_diff"] <= args.parity}
        if bad:
            for worker in workers.values():
                worker.close()
            raise SystemExit(f"parity failed (max relative difference from torch_eager > {args.parity:g}): {bad}")
        print("parity: " + ", ".join(f"{n} {rows[n]['max_rel_diff']:.1e}" for n in workers), file=sys.stderr,
              flush=True)
        live = list(workers)
        times, loads, other = interleave(workers, args.repeats)
        for name in live:
            rows[name]["times_s"] = times[name]
        for worker in workers.values():
            worker.close()
        for name in live:
            times = np.asarray(rows[name]["times_s"])
            median = float(np.median(times))
            rows[name].update(
                median_s=median,
                iqr_s=float(np.percentile(times, 75) - np.percentile(times, 25)),
                clips_per_s=args.batch / median,
                audio_s_per_s=args.batch * samples / SAMPLE_RATE / median,
            )
        for name in live:
            rows[name]["ratio_to_torch_eager"] = rows[name]["clips_per_s"] / rows["torch_eager"]["clips_per_s"]
    meta = {
        "batch": args.batch, "seconds": samples / SAMPLE_RATE, "samples": samples,
        "frames": int(reference.shape[1]), "repeats": args.repeats, "warmup": args.warmup,
        "parity_limit": args.parity, "inference_xla_flags": flags, "cpu_count": os.cpu_count(), "cpu": cpu,
        "load_before": load_before, "load_during": loads, "load_after": os.getloadavg()[0],
        "other_programs_cpu_cores": other, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick,
    }
    print(markdown(list(rows.values()), meta))
    results = Path(args.results_dir) if args.results_dir else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"audio_inference_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"meta": meta, "results": list(rows.values())}, indent=1))
    print(f"\nwritten: {path}", file=sys.stderr)
    return {"meta": meta, "results": list(rows.values())}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8, help="clips per call")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds of 16 kHz audio per clip")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per variant, interleaved")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per variant after the first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parity", type=float, default=1e-4,
                   help="largest max relative difference from torch_eager a JAX variant may show")
    p.add_argument("--variants", type=lambda s: s.split(","), default=None,
                   help=f"comma-separated subset of {','.join(VARIANTS)} (torch_eager always runs)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compile-timeout", type=float, default=420.0, help="seconds torch.compile may take")
    p.add_argument("--quick", action="store_true", help=f"tiny sizes for a smoke test ({QUICK}), no torch.compile")
    p.add_argument("--results-dir", default=None, help=f"where the JSON goes (default {RESULTS})")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker and args.worker not in VARIANTS:
        p.error(f"unknown variant {args.worker}")
    if args.variants and set(args.variants) - set(VARIANTS):
        p.error(f"unknown variants {sorted(set(args.variants) - set(VARIANTS))}; choose from {list(VARIANTS)}")
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
