"""A modality that reads nothing from the dataset: a constant vector per frame ('constant').

Shows that a modality is one module that registers itself (FER_JAX_PLUGINS=examples.constant_modality):
a spec says which dataset keys it reads (none), what a record becomes (ones of config
`modalities.<name>.dim`, default 4, float32[T, dim]) and how a video supplies it ('self': it makes
it). In a config:

    config.modalities.bias = {"input": "constant", "kind": "constant", "tokenizer": "linear", "dim": 4}

A model fed it learns nothing from it, of course: it is the smallest modality there is.
"""

from __future__ import annotations

import numpy as np

from fer_jax import modalities


class Constant(modalities.Modality):
    """A constant vector per frame, float32[T, dim] of ones."""

    name = "constant"
    video = "self"
    priority = 5

    def matches(self, key: str) -> bool:
        return key == "constant"

    def keys(self, key: str) -> tuple[str, ...]:
        return ()  # reads nothing from a record

    def read(self, record, name, key, ctx, out) -> None:
        dim = int(ctx.config.modalities[name].get("dim", 4)) if name in ctx.config.modalities else 4
        out[name] = np.ones((int(ctx.num_frames or 16), dim), np.float32)


modalities.register(Constant())
