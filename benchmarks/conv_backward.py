"""Benchmark: ResNet-18's convolutions one by one (forward, input gradient, weight gradient), XLA CPU vs PyTorch eager.

    python benchmarks/conv_backward.py [--batch 128 --size 104 --repeats 5] [--only layer1]
    python benchmarks/conv_backward.py --whole      (the whole network: forward, forward + gradient)
    XLA_FLAGS=... python benchmarks/conv_backward.py     (XLA flags act on the whole process)

For each distinct convolution of a torchvision ResNet-18 at `--size` px input (x count in the
network), times three jitted computations on float32 NHWC arrays: the forward convolution, the
gradient with respect to the input and the gradient with respect to the kernel (each alone,
`jax.vjp` of that argument only), against torch's `aten.convolution` and
`aten.convolution_backward` (output_mask selecting one gradient) on NCHW tensors, in one process,
interleaved call by call so other load hits both alike. Prints the CPU line, the load, one row
per layer and pass (median ms, torch / jax ratio: > 1 means JAX is faster) and network totals
(each layer weighted by its count). Under load, torch's 2 OpenMP threads lose far more than XLA's
pool (at load 5 its small 1x1 convs took 30-40 ms, XLA's 3-4 ms): compare flag sets by the JAX
column, and trust the ratio column only on a quiet machine.
Findings (jaxlib 0.10.2, 2-core EPYC): the weight gradients are XLA's weak pass; with
`--xla_cpu_experimental_ynn_fusion_type=` they took 1.0 s instead of 1.5 s summed over the
network at batch 128 (conv1's 7x7 110 vs 226 ms, each layer1 3x3 72 vs 114 ms); oneDNN
(`--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true`: 1.55 s) did not
help, `--xla_cpu_use_xnnpack=true` less (1.29 s), and im2col patches + one matmul was
slower still (XLA's dot with a 86k-long contraction ran at ~25-45 GFLOP/s).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

import machine  # benchmarks/machine.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # fer_jax, for --whole



def resnet18_convs(size: int) -> list[tuple[str, int, int, int, int, int, int]]:
    """(name, count, spatial in, in_ch, out_ch, kernel, stride) of every distinct ResNet-18 conv."""
    s = (size + 2 * 3 - 7) // 2 + 1  # conv1
    rows = [("conv1 7x7/2", 1, size, 3, 64, 7, 2)]
    s = (s + 2 - 3) // 2 + 1  # maxpool
    rows.append(("layer1 3x3", 4, s, 64, 64, 3, 1))
    c = 64
    for stage, w in ((2, 128), (3, 256), (4, 512)):
        rows.append((f"layer{stage} 3x3/2", 1, s, c, w, 3, 2))
        rows.append((f"layer{stage} 1x1/2", 1, s, c, w, 1, 2))
        s = (s + 2 - 3) // 2 + 1
        rows.append((f"layer{stage} 3x3", 3, s, w, w, 3, 1))
        c = w
    return rows


def whole_network(args) -> None:
    """--whole: all of ResNet-18 (features, train-mode BatchNorm) forward and gradient, JAX vs torch NCHW/NHWC."""
    import jax
    import jax.numpy as jnp
    import torch
    import torchvision
    from flax import nnx

    from fer_jax.models import resnet

    x = np.random.default_rng(0).normal(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
    net = resnet.resnet18(num_classes=None, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)

    def loss(p, r, x):
        f = nnx.merge(graphdef, p, r).features(x, train=True)
        return jnp.sum(f * f)

    xj = jnp.asarray(x)
    fwd = jax.jit(loss)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    tnet = torchvision.models.resnet18()
    tnet.fc = torch.nn.Identity()
    tnet.train()
    layouts = {"NCHW": torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))),
               # permute of NHWC frames, as a PyTorch user's loop writes it: channels-last strides
               "channels-last": torch.from_numpy(x).permute(0, 3, 1, 2)}

    def tfwd(xt):
        with torch.no_grad():
            return (tnet(xt) ** 2).sum()

    def tgrad(xt):
        tnet.zero_grad(set_to_none=True)
        (tnet(xt) ** 2).sum().backward()

    cases = {"JAX forward": lambda: fwd(params, rest, xj).block_until_ready(),
             "JAX forward + gradient": lambda: jax.block_until_ready(grad(params, rest, xj))}
    for name, xt in layouts.items():
        cases[f"torch {name} forward"] = lambda xt=xt: tfwd(xt)
        cases[f"torch {name} forward + gradient"] = lambda xt=xt: tgrad(xt)
    for f in cases.values():
        f()  # compile / warm up
    times = {k: [] for k in cases}
    order = list(cases)
    for r in range(args.repeats):
        for k in order[r % len(order):] + order[: r % len(order)]:  # rotate the order every round
            t0 = time.perf_counter()
            cases[k]()
            times[k].append(time.perf_counter() - t0)
    print(f"ResNet-18 features, train-mode BatchNorm, batch {args.batch} at {args.size} px; load "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| pass | ms (median) |\n|---|---:|")
    for k, v in times.items():
        print(f"| {k} | {1e3 * np.median(v):.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=104)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="substring of the layer names to time")
    ap.add_argument("--whole", action="store_true",
                    help="time the whole network's forward and gradient instead (JAX, torch NCHW and channels-last)")
    args = ap.parse_args()
    if args.whole:
        info = machine.cpu_info()
        print(f"CPU: {info['model']} (AVX-512: {info['avx512']}), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
        return whole_network(args)

    import jax
    import jax.numpy as jnp
    import torch

    def conv(x, w, stride, pad):
        return jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    info = machine.cpu_info()
    print(f"CPU: {info['model']} (AVX-512: {info['avx512']}), torch threads {torch.get_num_threads()}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, batch {args.batch}, {args.size} px")
    print(f"load at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| layer | x | pass | JAX ms | torch ms | torch/JAX |")
    print("|---|---:|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    totals = {p: [0.0, 0.0] for p in ("fwd", "dx", "dw")}
    for name, count, s, cin, cout, k, stride in resnet18_convs(args.size):
        if args.only and args.only not in name:
            continue
        pad = k // 2
        x = rng.normal(size=(args.batch, s, s, cin)).astype(np.float32)
        w = (rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
        so = (s + 2 * pad - k) // stride + 1
        g = rng.normal(size=(args.batch, so, so, cout)).astype(np.float32)
        xj, wj, gj = jnp.asarray(x), jnp.asarray(w), jnp.asarray(g)
        fwd = jax.jit(lambda x, w: conv(x, w, stride, pad))
        dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w, stride, pad), x)[1](g)[0])
        dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w, stride, pad), w)[1](g)[0])
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
        gt = torch.from_numpy(np.ascontiguousarray(g.transpose(0, 3, 1, 2)))
        cb = torch.ops.aten.convolution_backward

        def tconv():
            return torch.ops.aten.convolution(xt, wt, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], 1)

        def tgrad(mask):
            return cb(gt, xt, wt, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], 1, mask)

        passes = {
            "fwd": (lambda: fwd(xj, wj).block_until_ready(), tconv),
            "dx": (lambda: dx(xj, wj, gj).block_until_ready(), lambda: tgrad([True, False, False])),
            "dw": (lambda: dw(xj, wj, gj).block_until_ready(), lambda: tgrad([False, True, False])),
        }
        with torch.no_grad():
            # parity of the gradients before timing (a wrong formulation shows up here)
            tdx, tdw = tgrad([True, True, False])[:2]
            err_dx = np.abs(np.asarray(dx(xj, wj, gj)) - tdx.numpy().transpose(0, 2, 3, 1)).max() / np.abs(tdx.numpy()).max()
            err_dw = np.abs(np.asarray(dw(xj, wj, gj)) - tdw.numpy().transpose(2, 3, 1, 0)).max() / np.abs(tdw.numpy()).max()
            assert err_dx < 1e-4 and err_dw < 1e-4, (name, err_dx, err_dw)
            for p, (jf, tf) in passes.items():
                jf(), tf()  # compile / warm up
                jt, tt = [], []
                for r in range(args.repeats):
                    for f, out in ((jf, jt), (tf, tt))[:: 1 if r % 2 else -1]:
                        t0 = time.perf_counter()
                        f()
                        out.append(time.perf_counter() - t0)
                j, t = 1e3 * np.median(jt), 1e3 * np.median(tt)
                totals[p][0] += count * j
                totals[p][1] += count * t
                print(f"| {name} | {count} | {p} | {j:.1f} | {t:.1f} | {t / j:.2f} |", flush=True)
    for p, (j, t) in totals.items():
        print(f"| **total** | | {p} | {j:.0f} | {t:.0f} | {t / j:.2f} |")
    j, t = sum(v[0] for v in totals.values()), sum(v[1] for v in totals.values())
    print(f"| **all passes** | | | {j:.0f} | {t:.0f} | {t / j:.2f} |")
    print(f"load at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
