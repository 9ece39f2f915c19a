"""The cheap dropout mask: drop rate, unbiasedness, independence, and the same mask on 1 or 8 devices."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.models.transformer import dropout
from tests.helpers import ROOT


def test_rate_scale_and_independence():
    x = jnp.ones((64, 49, 256), jnp.float32)
    out = np.asarray(dropout(x, 0.1, jax.random.key(0)))
    dropped = out == 0
    expected_rate = 26 / 256  # 0.1 rounded to a multiple of 1/256
    assert abs(dropped.mean() - expected_rate) < 2e-3
    np.testing.assert_allclose(out[~dropped], 256 / 230, rtol=1e-6)
    assert abs(out.mean() - 1.0) < 5e-3  # unbiased
    a, b = dropped[..., :-1].ravel().astype(float), dropped[..., 1:].ravel().astype(float)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01  # neighbours (bytes of one draw) independent
    other = np.asarray(dropout(x, 0.1, jax.random.key(1))) == 0
    assert (other != dropped).mean() > 0.1
    assert np.array_equal(np.asarray(dropout(x, 0.0, jax.random.key(0))), np.asarray(x))


def test_sharded_mask_equals_single_device():
    code = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from fer_jax.models.transformer import dropout
x = jnp.arange(16 * 9 * 20, dtype=jnp.float32).reshape(16, 9, 20) + 1
one = np.asarray(jax.jit(lambda x, k: dropout(x, 0.1, k))(x, jax.random.key(3)))
mesh = Mesh(np.asarray(jax.devices()), ('data',))
xs = jax.device_put(x, NamedSharding(mesh, P('data')))
eight = np.asarray(jax.jit(lambda x, k: dropout(x, 0.1, k), out_shardings=NamedSharding(mesh, P('data')))(xs, jax.random.key(3)))
assert len(jax.devices()) == 8
assert np.array_equal(one, eight), np.argwhere(one != eight)[:5]
print("ok")
"""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
