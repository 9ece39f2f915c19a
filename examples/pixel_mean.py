"""A generator that averages pixels: the mean colour of each cell of a grid over every frame ('pixel_mean').

Shows that a generator is one module that registers itself (FER_JAX_PLUGINS=examples.pixel_mean):

    python -m fer_jax.extract --config configs/extract.py:pixel_mean        # -> dfew_features/pixel_mean
    python -m fer_jax.train --config configs/fusion.py:face,generator=pixel_mean --workdir runs/pm

Features per frame: the mean RGB of each of the 2 x 2 cells of the frame, scaled to [0, 1] (F = 12).
No weights: `load` has nothing to read.
"""

from __future__ import annotations

import jax.numpy as jnp

from fer_jax.models import generators

GRID = 2


class PixelMean(generators.PerFrameGenerator):
    """uint8[N, H, W, 3] -> float32[N, GRID * GRID * 3]: the mean colour of each grid cell."""

    def frame_features(self, frames, *, train: bool):
        del train
        n, h, w, c = frames.shape
        x = frames[:, : h - h % GRID, : w - w % GRID].astype(jnp.float32) / 255.0
        cells = x.reshape(n, GRID, (h - h % GRID) // GRID, GRID, (w - w % GRID) // GRID, c)
        return cells.mean(axis=(2, 4)).reshape(n, GRID * GRID * c)


generators.register("pixel_mean", generators.GeneratorSpec(
    feature_dim=GRID * GRID * 3, build=lambda rngs, dtype=None: PixelMean(),
    load=lambda module, weights: "no weights: the mean colour of each grid cell", input_size="any RGB frame"))
