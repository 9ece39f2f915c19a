"""Benchmark: gradient of a linear/MLP block on [B, N, F] tokens as given vs flattened to [B*N, F].

    python benchmarks/dense_backward.py      # a few seconds

Why `fer_jax.models.transformer.dense` flattens the token axes before every Linear: on CPU,
XLA computes the weight gradient of a [B, N, F] input by contracting two axes at once, which is
slower than the same product on [B*N, F]. Shapes are those of the OmniVec pretraining trunk
(B=64, N=32, D=128, MLP 256) and the fusion benchmark's (B=32, N=49, D=256, MLP 1024). Both
variants compute the same numbers (checked here); prints a table with the ratio.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def median_ms(fn, *args, repeats: int = 40) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    print("| shape (B, N, D, MLP) | MLP grad, [B, N, D] | MLP grad, [B*N, D] | speed-up |")
    print("|---|---:|---:|---:|")
    for b, n, d, m in ((64, 32, 128, 256), (32, 49, 256, 1024)):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(b, n, d)), jnp.float32)
        ct = jnp.asarray(rng.normal(size=(b, n, d)), jnp.float32)
        w1 = jnp.asarray(rng.normal(size=(d, m)) * 0.05, jnp.float32)
        w2 = jnp.asarray(rng.normal(size=(m, d)) * 0.05, jnp.float32)

        def tokens3(w1, w2, x):
            return jnp.sum((jax.nn.gelu(x @ w1) @ w2) * ct)

        def tokens2(w1, w2, x):
            flat = x.reshape(-1, d)
            return jnp.sum((jax.nn.gelu(flat @ w1) @ w2).reshape(x.shape) * ct)

        g3 = jax.jit(jax.grad(tokens3, argnums=(0, 1, 2)))
        g2 = jax.jit(jax.grad(tokens2, argnums=(0, 1, 2)))
        for a, c in zip(g3(w1, w2, x), g2(w1, w2, x)):
            np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-4)
        t3, t2 = median_ms(g3, w1, w2, x), median_ms(g2, w1, w2, x)
        print(f"| ({b}, {n}, {d}, {m}) | {t3:.2f} ms | {t2:.2f} ms | {t3 / t2:.2f}x |")


if __name__ == "__main__":
    main()
