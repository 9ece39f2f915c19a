"""Benchmark: one OmniVec pretraining step (fer_jax.pretrain) against a PyTorch eager twin.

    python benchmarks/pretrain_step.py            # ~1 min on a 2-core CPU
    python benchmarks/pretrain_step.py --quick    # a smoke test

configs/omnivec.py as shipped (face features 135-d + OpenPose keypoints 411-d, 16 frames each,
so 32 tokens; width 128, 2 layers, batch 64): the project's jitted step (masking drawn inside
the step, reconstruction loss, AdamW with clipping) against benchmarks/torch_omnivec.py (the
same network, parameter count and loss; masking drawn with torch's generator), each on one
fixed in-memory batch, interleaved in rounds. Prints a Markdown table with the ratio and writes
benchmarks/results/pretrain_step_<time>.json. tests/test_benchmark_reference.py checks that the
twin computes the same loss and AdamW steps as the project's step.
"""

from __future__ import annotations

import argparse
from fer_jax import train_state, runs
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))

INPUT_DIMS = {"face": 135, "pose": 411}
NUM_FRAMES = 16


def _sibling(name: str):
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def benchmark_config(batch_size: int = 64):
    """configs/omnivec.py:face+pose, reading no dataset (input shapes are given)."""
    from configs import omnivec

    c = omnivec.get_config("face+pose")
    c.batch_size = batch_size
    c.progress_bar = False
    return c


def random_batch(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """{face: float32[B, 16, 135], pose: float32[B, 16, 411], mask/pose: bool[B, 16], mask, label}."""
    rng = np.random.default_rng(seed)
    out = {m: rng.normal(size=(batch, NUM_FRAMES, f)).astype(np.float32) for m, f in INPUT_DIMS.items()}
    out["mask/pose"] = rng.random((batch, NUM_FRAMES)) < 0.9  # OpenPose misses some frames
    out["mask"] = np.ones(batch, bool)
    out["label"] = np.full(batch, -1, np.int32)
    return out


def step_flops(config, batch: int) -> float:
    """Analytic FLOPs of one step: 3 x the forward matmuls (tokenizers, trunk, decoders)."""
    m = config.model
    d, t = m.width, NUM_FRAMES
    n = t * len(INPUT_DIMS)
    tokenizers = 2 * t * INPUT_DIMS["face"] * d + 2 * t * (INPUT_DIMS["pose"] * d + d * d)
    block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * m.mlp_dim
    decoders = 2 * t * d * sum(INPUT_DIMS.values())
    return 3.0 * batch * (tokenizers + m.depth * block + decoders)


class JaxStep:
    """fer_jax.pretrain's jitted step on one fixed device batch; `run(k)` = k steps, then block."""

    def __init__(self, config):
        import jax

        from fer_jax import parallel, pretrain, train
        from fer_jax.models import registry

        self.jax = jax
        mesh = parallel.make_mesh()
        shapes = {m: (NUM_FRAMES, f) for m, f in INPUT_DIMS.items()}
        graphdef, tx, state = train_state.init(config, runs.model_builder(config, shapes))
        self.params = train_state.param_count(state)
        self.state = jax.device_put(state, parallel.replicated(mesh))
        self.step_fn, _ = pretrain.make_steps(config, graphdef, tx, mesh)
        self.batch = parallel.global_batch(random_batch(config.batch_size), mesh)
        self.key = jax.random.key(0)
        self.step = 0
        self.stats = None

    def run(self, k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            self.state, self.stats = self.step_fn(self.state, self.batch, self.jax.random.fold_in(self.key, self.step))
            self.step += 1
        self.jax.block_until_ready((self.state, self.stats))
        return (time.perf_counter() - t0) / k


class TorchStep:
    """benchmarks/torch_omnivec.py's eager step (masking drawn each step, like the JAX step)."""

    def __init__(self, config):
        import torch

        to = _sibling("torch_omnivec")
        self.torch, self.to, self.config = torch, to, config
        torch.manual_seed(0)
        self.model = to.from_config(config, INPUT_DIMS, NUM_FRAMES)
        self.params = to.tf.param_count(self.model)
        self.opt, self.sched = to.tf.make_optimizer(self.model, config)
        self.batch = {k: torch.from_numpy(v) for k, v in random_batch(config.batch_size).items()}
        self.generator = torch.Generator().manual_seed(0)

    def run(self, k: int) -> float:
        p = self.config.pretrain
        t0 = time.perf_counter()
        for _ in range(k):
            masks = {m: self.batch.get(f"mask/{m}", self.torch.ones(self.batch[m].shape[:2], dtype=self.torch.bool))
                     for m in self.model.encoder.modalities}
            present = self.torch.stack([masks[m] for m in self.model.encoder.modalities], 1)
            hidden = self.to.sample_hidden(self.generator, present, mask_ratio=p.mask_ratio,
                                           modality_mask_prob=p.modality_mask_prob)
            hidden = {m: hidden[:, i] for i, m in enumerate(self.model.encoder.modalities)}
            self.to.train_step(self.model, self.opt, self.sched, self.batch, hidden,
                               grad_clip_norm=self.config.optimizer.grad_clip_norm)
        return (time.perf_counter() - t0) / k


def main(args) -> dict:
    ts = _sibling("train_step")  # timing helpers shared with the fusion benchmark
    import jax
    import torch

    rounds = args.rounds or (3 if args.quick else 15)
    k = args.steps or (2 if args.quick else 5)
    load_before = os.getloadavg()[0]
    config = benchmark_config(args.batch)
    flops = step_flops(config, args.batch)
    ts.log("building and compiling the JAX step ...")
    t0 = time.perf_counter()
    jstep = JaxStep(config)
    jstep.run(1)
    compile_s = time.perf_counter() - t0
    tstep = TorchStep(config)
    if jstep.params != tstep.params:
        raise AssertionError(f"parameter counts differ: JAX {jstep.params:,} vs PyTorch {tstep.params:,}")
    steps = {"jax": jstep.run, "torch": tstep.run}
    for run in steps.values():
        run(2)
    times = ts.time_steps(steps, rounds, k)
    stats = {name: ts.summarize(t, args.batch, flops) for name, t in times.items()}
    result = {
        "steps": stats,
        "ratio": stats["jax"]["clips_per_s"] / stats["torch"]["clips_per_s"],
        "flops_per_step": flops,
        "jax_compile_s": compile_s,
        "meta": {"batch": args.batch, "tokens": NUM_FRAMES * len(INPUT_DIMS), "width": config.model.width,
                 "depth": config.model.depth, "params": jstep.params, "rounds": rounds, "steps_per_round": k,
                 "jax_device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})",
                 "torch_threads": torch.get_num_threads(), "jax": jax.__version__, "torch": torch.__version__,
                 "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                 "load_before": load_before, "load_after": os.getloadavg()[0],
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")},
    }
    j, t = stats["jax"], stats["torch"]
    print(f"OmniVec pretraining step: batch {args.batch}, {result['meta']['tokens']} tokens, width "
          f"{config.model.width}, depth {config.model.depth}, {jstep.params:,} parameters; median of {rounds} "
          f"rounds x {k} steps; load {load_before:.2f} -> {result['meta']['load_after']:.2f}\n")
    print("| step | ms/step | clips/s | GFLOP/s | vs PyTorch eager |")
    print("|---|---:|---:|---:|---:|")
    print(f"| PyTorch eager | {t['median_s'] * 1e3:.1f} | {t['clips_per_s']:.0f} | {t['gflops']:.1f} | 1.00 |")
    print(f"| JAX (fer_jax.pretrain) | {j['median_s'] * 1e3:.1f} | {j['clips_per_s']:.0f} | {j['gflops']:.1f} | "
          f"**{result['ratio']:.2f}x** |")
    print(f"\nFLOPs per step (analytic): {flops / 1e9:.2f} GFLOP; JAX compile {compile_s:.1f} s.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"pretrain_step_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwritten: {path}", file=sys.stderr)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: few rounds")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=0, help="interleaved timing rounds (default 15, quick 3)")
    p.add_argument("--steps", type=int, default=0, help="steps per round (default 5, quick 2)")
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
