"""Training: `train_and_evaluate(config, workdir)` and `python -m fer_jax.train`.

    python -m fer_jax.train --config configs/demo.py --workdir runs/demo

The run resumes from the newest complete checkpoint in the workdir. SIGTERM (a preemption
notice) saves a checkpoint and exits cleanly.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fer_jax import checkpoint as ckpt_lib
from fer_jax import input_pipeline, losses, metrics, parallel, workdir as workdir_lib
from fer_jax.errors import ConfigError
from fer_jax.models import registry
from tfds_dfew import release

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN/Inf; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------------------------
# Model, optimizer and the train state (plain pytrees: params, model_state, opt_state, step).
# ----------------------------------------------------------------------------------------------


def learning_rate_schedule(config) -> optax.Schedule:
    o = config.optimizer
    total = int(config.num_train_steps)
    warmup = min(int(o.warmup_steps), max(total - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=o.lr, warmup_steps=warmup, decay_steps=max(total, warmup + 1),
        end_value=o.lr * o.get("end_lr_factor", 0.01),
    )


def make_optimizer(config) -> optax.GradientTransformation:
    o = config.optimizer
    schedule = learning_rate_schedule(config)
    if o.name == "adamw":
        tx = optax.adamw(schedule, b1=o.get("b1", 0.9), b2=o.get("b2", 0.999), weight_decay=o.weight_decay,
                         mask=_decay_mask)
    elif o.name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(o.weight_decay, mask=_decay_mask),
                         optax.sgd(schedule, momentum=o.get("momentum", 0.9), nesterov=o.get("nesterov", False)))
    else:
        raise ConfigError(f"config.optimizer.name={o.name!r}: expected 'adamw' or 'sgd'.")
    multipliers = tuple(o.get("lr_multipliers", ()) or ())
    if multipliers:
        tx = _with_lr_multipliers(tx, multipliers)
    if o.get("grad_clip_norm"):
        tx = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), tx)
    return tx


def param_path(path) -> str:
    """'tokenizers/face/generator/network/conv1/kernel' for a jax key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _with_lr_multipliers(tx, multipliers):
    """Scales updates of parameters whose path matches a regex (first match wins); 0 freezes them.

    multipliers: ((regex, factor), ...), e.g. (("tokenizers/face/generator/.*", 0.1),).
    """
    import re

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


def _decay_mask(params):
    """Weight decay on matrices and conv kernels only (not biases, norms or embeddings' 1-D params)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


@dataclasses.dataclass
class Trainer:
    """The jitted steps and the static halves (graphdef, optimizer) they close over."""

    graphdef: Any
    tx: optax.GradientTransformation
    mesh: Any
    train_step: Any
    eval_step: Any


def init_state(config, input_shapes, build=registry.build_model):
    """(graphdef, tx, state) with state = {'params', 'model_state', 'opt_state', 'step'}; `build` makes the model."""
    model = build(config, input_shapes, seed=int(config.seed))
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(config)
    state = {"params": params, "model_state": model_state, "opt_state": tx.init(params),
             "step": jnp.zeros((), jnp.int32)}
    return graphdef, tx, state


def param_count(state) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state["params"])))


def class_weights_of(config, class_counts=None) -> np.ndarray | None:
    """float32[C] loss weights from config.loss.class_weights, or None.

    "" / None: no weights; "balanced": 1 / count of each class (`class_counts`, the training
    split's), normalised to mean 1; "w1,...,wC" or a sequence: those numbers.
    """
    num_classes = int(config.get("num_classes", 7))
    spec = config.loss.get("class_weights", None)
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    if isinstance(spec, str) and spec.strip() == "balanced":
        if class_counts is None:
            raise ConfigError("config.loss.class_weights='balanced' needs the training split's class counts.")
        return losses.class_balanced_weights(class_counts)
    try:
        values = [float(v) for v in (spec.split(",") if isinstance(spec, str) else spec)]
    except ValueError:
        values = []
    if len(values) != num_classes or not all(np.isfinite(v) and v >= 0 for v in values):
        raise ConfigError(f"config.loss.class_weights={spec!r}: expected '', 'balanced' or {num_classes} "
                          "non-negative numbers separated by commas, in class order (happy, sad, neutral, angry, "
                          "surprise, disgust, fear).")
    return np.asarray(values, np.float32)


def make_trainer(config, graphdef, tx, mesh, *, class_counts=None) -> Trainer:
    """The jitted steps; class_counts (int[C] of the training split) serve class_weights='balanced'."""
    num_classes = int(config.get("num_classes", 7))
    modalities = tuple(config.modalities)
    smoothing = float(config.loss.get("label_smoothing", 0.0))
    class_weights = class_weights_of(config, class_counts)
    soft_targets = float(config.loss.get("soft_targets", 0.0) or 0.0)  # weight of the vote distribution
    if not 0.0 <= soft_targets <= 1.0:
        raise ConfigError(f"config.loss.soft_targets={soft_targets}: expected a weight in [0, 1] (0: hard labels).")
    skip_nonfinite = bool(config.get("skip_nonfinite_batches", False))
    schedule = learning_rate_schedule(config)

    def train_step(state, batch, key):
        inputs, masks = input_pipeline.model_inputs(batch, modalities)

        def loss_fn(params, model_state):
            model = nnx.merge(graphdef, params, model_state, copy=True)
            logits = model(inputs, masks, train=True, rngs=nnx.Rngs(dropout=key))
            if soft_targets:
                target = losses.targets(batch["label"], num_classes=num_classes, label_smoothing=smoothing,
                                        votes=batch["votes"], soft_targets=soft_targets)
                loss = losses.soft_cross_entropy(logits, target, labels=batch["label"],
                                                 class_weights=class_weights, mask=batch["mask"])
            else:
                loss = losses.cross_entropy(logits, batch["label"], num_classes=num_classes,
                                            label_smoothing=smoothing, class_weights=class_weights,
                                            mask=batch["mask"])
            return loss, (logits, nnx.state(model, nnx.Not(nnx.Param)))

        (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["model_state"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        grad_norm = optax.global_norm(grads)
        new = {"params": params, "model_state": model_state, "opt_state": opt_state, "step": state["step"] + 1}
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if skip_nonfinite:  # keep the old weights, count the step, move on to the next batch
            kept = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, {**state, "step": new["step"]})
            new = kept
        correct = (jnp.argmax(logits, -1) == batch["label"]) & batch["mask"]
        stats = {"loss": loss, "accuracy": correct.sum() / jnp.maximum(batch["mask"].sum(), 1),
                 "grad_norm": grad_norm, "lr": schedule(state["step"]), "finite": finite}
        return new, stats

    def eval_step(state, batch):
        model = nnx.merge(graphdef, state["params"], state["model_state"])
        inputs, masks = input_pipeline.model_inputs(batch, modalities)
        logits = model(inputs, masks, train=False)
        return metrics.confusion_matrix_jax(batch["label"], logits, batch["mask"], num_classes)

    repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    return Trainer(
        graphdef=graphdef,
        tx=tx,
        mesh=mesh,
        train_step=jax.jit(train_step, in_shardings=(repl, data, repl), out_shardings=(repl, repl),
                           donate_argnums=(0,)),
        eval_step=jax.jit(eval_step, in_shardings=(repl, data), out_shardings=repl),
    )


def evaluate(config, trainer: Trainer, state, split: str | None = None, *, progress: bool = False) -> dict:
    """Confusion matrix and UAR/WAR of `state` over a whole split (every clip counted once)."""
    eval_batch = int(config.get("eval_batch_size", config.batch_size))
    batches, num_batches = input_pipeline.eval_batches(
        config, split, process_index=jax.process_index(), process_count=jax.process_count(), batch_size=eval_batch)
    total = None
    if progress and jax.process_index() == 0:
        from tqdm import tqdm

        batches = tqdm(batches, total=num_batches, desc="evaluate", leave=False)
    for local in batches:
        conf = trainer.eval_step(state, parallel.global_batch(local, trainer.mesh))
        total = conf if total is None else total + conf
    confusion = np.rint(np.asarray(jax.device_get(total))).astype(np.int64)
    return metrics.summarize(confusion, release.CLASS_NAMES)


# ----------------------------------------------------------------------------------------------
# The training loop.
# ----------------------------------------------------------------------------------------------


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


class _Preemption:
    """Turns SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains config's model on its fold, evaluating on the fold's test split; returns final metrics."""
    if "pretrain" in config:
        raise ConfigError("this is an OmniVec pretraining config (it has a `pretrain` block); run it with "
                          "python -m fer_jax.pretrain, and train classifiers with configs/fusion.py or frames.py.")
    if "{fold}" in str(config.dataset.name):  # a per-fold dataset: the run records the concrete one
        with config.unlocked():
            config.dataset.name = input_pipeline.dataset_name(config)
    is_main = jax.process_index() == 0
    # -- Workdir: one config per workdir ---------------------------------------------------------
    if is_main:
        workdir_lib.claim(workdir, config)

    # -- Mesh and input pipeline ------------------------------------------------------------------
    mesh = parallel.make_mesh()
    input_shapes = input_pipeline.example_shapes(config)

    # -- Model, optimizer, train state --------------------------------------------------------------
    graphdef, tx, state = init_state(config, input_shapes)
    check_batchnorm_batch(config, state, mesh)
    state = jax.device_put(state, parallel.replicated(mesh))
    class_counts = None
    if str(config.loss.get("class_weights", "") or "").strip() == "balanced":
        labels = input_pipeline.read_fields(input_pipeline.open_source(config, input_pipeline.fold_split(
            config, "train")), ("label",))["label"]
        class_counts = np.bincount(labels[labels >= 0], minlength=int(config.get("num_classes", 7)))
        log.info("class weights (balanced) from training counts %s: %s", class_counts.tolist(),
                 np.round(class_weights_of(config, class_counts), 3).tolist())
    trainer = make_trainer(config, graphdef, tx, mesh, class_counts=class_counts)
    log.info("model: %s parameters; modalities %s; mesh %s", f"{param_count(state):,}",
             {m: tuple(s) for m, s in input_shapes.items()}, dict(mesh.shape))

    # -- Resume from the newest complete checkpoint --------------------------------------------------
    checkpoints = ckpt_lib.RunCheckpoints(workdir, max_to_keep=config.get("keep_checkpoints", 3))
    start = checkpoints.latest_step() or 0
    if start:
        abstract = ckpt_lib.abstract_like(state, parallel.replicated(mesh))
        state, _ = checkpoints.restore(start, abstract)
        log.info("resumed from checkpoint at step %d in %s", start, checkpoints.directory)
    # The data position is a function of the step: the iterator starts where the checkpoint is.
    train_iter = iter(input_pipeline.train_dataset(
        config, process_index=jax.process_index(), process_count=jax.process_count(), start_step=start))
    metrics_log = workdir_lib.MetricsLog(workdir, enabled=is_main, resume_step=start)

    total = int(config.num_train_steps)
    base_key = jax.random.key(int(config.seed))
    log_every, eval_every = int(config.log_every), int(config.get("eval_every", 0) or 0)
    ckpt_every = int(config.get("checkpoint_every", 0) or 0)
    pending: list[tuple[int, dict]] = []
    bar = None
    if is_main and config.get("progress_bar", True):
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def save(step):
        if checkpoints.latest_step() == step:  # e.g. SIGTERM right after a scheduled save
            return
        checkpoints.save(step, state, meta={"step": step, "config": workdir_lib.config_to_dict(config)})

    def flush_train_metrics(step):
        """Fetches pending step stats (one host sync), checks them, logs their mean."""
        if not pending:
            return
        fetched = jax.device_get([s for _, s in pending])
        for (s, _), values in zip(pending, fetched):
            if not values["finite"] and not config.get("skip_nonfinite_batches", False):
                raise NonFiniteLossError(
                    f"step {s}: loss or gradients are not finite (loss={float(values['loss'])}, "
                    f"grad_norm={float(values['grad_norm'])}). The last good checkpoint (step "
                    f"{checkpoints.latest_step()}) is kept in {checkpoints.directory}. Lower "
                    "config.optimizer.lr, set config.optimizer.grad_clip_norm, or set "
                    "config.skip_nonfinite_batches=True to skip such batches."
                )
        mean = {k: float(np.mean([v[k] for v in fetched])) for k in fetched[0] if k != "finite"}
        mean["skipped_batches"] = float(sum(not v["finite"] for v in fetched))
        metrics_log.write(step, "train", mean)
        if bar is not None:
            bar.set_postfix(loss=f"{mean['loss']:.3f}", acc=f"{mean['accuracy']:.2f}")
        pending.clear()

    result: dict = {}
    step = start
    t0 = time.time()
    with _Preemption() as preemption:
        while step < total:
            local = next(train_iter)
            batch = parallel.global_batch(local, mesh)
            state, stats = trainer.train_step(state, batch, jax.random.fold_in(base_key, step))
            step += 1
            pending.append((step, stats))
            if bar is not None:
                bar.update(1)
            if step % log_every == 0 or step == total:
                flush_train_metrics(step)
            if eval_every and step % eval_every == 0 and step != total:
                result = evaluate(config, trainer, state)
                metrics_log.write(step, "test", {"uar": result["uar"], "war": result["war"]})
                log.info("step %d: test UAR %.4f WAR %.4f", step, result["uar"], result["war"])
            if (ckpt_every and step % ckpt_every == 0) or step == total:
                flush_train_metrics(step)
                save(step)
            if preemption.requested:
                flush_train_metrics(step)
                save(step)
                log.warning("SIGTERM received: saved a checkpoint at step %d; rerun the same command to resume.",
                            step)
                break
    if bar is not None:
        bar.close()
    if step >= total:
        result = evaluate(config, trainer, state)
        metrics_log.write(step, "test", {"uar": result["uar"], "war": result["war"],
                                         "train_seconds": time.time() - t0})
        log.info("step %d (final): test UAR %.4f WAR %.4f", step, result["uar"], result["war"])
    metrics_log.close()
    checkpoints.close()
    return result


# ----------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------


def main(argv):
    from fer_jax import cli

    config, workdir = cli.config_and_workdir(argv)
    result = train_and_evaluate(config, workdir)
    if result and jax.process_index() == 0:
        print(metrics.format_table(result))


if __name__ == "__main__":
    from fer_jax import cli

    cli.run(main)
