"""The train state: model parameters, optimizer and learning-rate schedule, as plain pytrees.

state = {'params': nnx.State, 'model_state': nnx.State (BatchNorm statistics...), 'opt_state', 'step'}.
`init` makes it from a model-building function (a real initialisation, for training);
`abstract` gives its shapes only (`jax.eval_shape`: nothing computed), the target of a restore.
Both loops (classification training, OmniVec pretraining) and every restore use these.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fer_jax.errors import ConfigError


def learning_rate_schedule(config) -> optax.Schedule:
    """Linear warm-up to config.optimizer.lr, then cosine decay to lr * end_lr_factor at num_train_steps."""
    o = config.optimizer
    total = int(config.num_train_steps)
    warmup = min(int(o.warmup_steps), max(total - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=o.lr, warmup_steps=warmup, decay_steps=max(total, warmup + 1),
        end_value=o.lr * o.get("end_lr_factor", 0.01),
    )


def make_optimizer(config) -> optax.GradientTransformation:
    """AdamW or SGD (config.optimizer), weight decay on matrices only, optional per-path lr factors and clipping."""
    o = config.optimizer
    schedule = learning_rate_schedule(config)
    if o.name == "adamw":
        tx = optax.adamw(schedule, b1=o.get("b1", 0.9), b2=o.get("b2", 0.999), weight_decay=o.weight_decay,
                         mask=decay_mask)
    elif o.name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(o.weight_decay, mask=decay_mask),
                         optax.sgd(schedule, momentum=o.get("momentum", 0.9), nesterov=o.get("nesterov", False)))
    else:
        raise ConfigError(f"config.optimizer.name={o.name!r}: expected 'adamw' or 'sgd'.")
    multipliers = tuple(o.get("lr_multipliers", ()) or ())
    if multipliers:
        tx = with_lr_multipliers(tx, multipliers)
    if o.get("grad_clip_norm"):
        tx = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), tx)
    return tx


def param_path(path) -> str:
    """'tokenizers/face/generator/network/conv1/kernel' for a jax key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def with_lr_multipliers(tx, multipliers):
    """Scales updates of parameters whose path matches a regex (first match wins); 0 freezes them.

    multipliers: ((regex, factor), ...), e.g. (("tokenizers/face/generator/.*", 0.1),).
    """
    rules = [(re.compile(pattern), float(factor)) for pattern, factor in multipliers]
    factors = sorted({f for _, f in rules} | {1.0})

    def labels(params):
        def label(path, _):
            name = param_path(path)
            return f"x{next((f for r, f in rules if r.fullmatch(name)), 1.0)}"

        return jax.tree_util.tree_map_with_path(label, params)

    def scaled(f):
        return optax.set_to_zero() if f == 0 else optax.chain(tx, optax.scale(f)) if f != 1.0 else tx

    return optax.multi_transform({f"x{f}": scaled(f) for f in factors}, labels)


def decay_mask(params):
    """Weight decay on matrices and conv kernels only (not biases, norms or embeddings' 1-D params)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _split(model, tx):
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    state = {"params": params, "model_state": model_state, "opt_state": tx.init(params),
             "step": jnp.zeros((), jnp.int32)}
    return graphdef, state


def init(config, build: Callable[[], nnx.Module]):
    """(graphdef, tx, state) of the model `build()` makes, with config's optimizer, initialised for training."""
    tx = make_optimizer(config)
    graphdef, state = _split(build(), tx)
    return graphdef, tx, state


def abstract(config, build: Callable[[], nnx.Module]):
    """(graphdef, tx, state of jax.ShapeDtypeStructs): the train state's structure, nothing initialised."""
    tx = make_optimizer(config)
    static = {}

    def shapes():
        static["graphdef"], state = _split(build(), tx)
        return state

    state = jax.eval_shape(shapes)
    return static["graphdef"], tx, state


def param_count(state) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state["params"])))


def check_batchnorm_batch(config, state, mesh) -> None:
    """Refuses a training batch that must be padded when the model has BatchNorm.

    Padding rows (a batch that does not divide over this process's devices) are masked out of
    the loss, but BatchNorm's batch statistics would count them.
    """
    if not jax.tree.leaves(nnx.State(state["model_state"]).filter(nnx.BatchStat)):
        return
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    local_batch = int(config.batch_size) // jax.process_count()
    if local_batch % local_devices:
        raise ConfigError(
            f"config.batch_size={config.batch_size} gives {local_batch} clips per process, which do not divide "
            f"over its {local_devices} devices; this model has BatchNorm, whose batch statistics would count "
            f"the padding rows. Use a multiple of {local_devices * jax.process_count()}.")
