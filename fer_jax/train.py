"""Training: `train_and_evaluate(config, workdir)` and `python -m fer_jax.train`.

    python -m fer_jax.train --config configs/demo.py --workdir runs/demo

The run resumes from the newest complete checkpoint in the workdir. SIGTERM (a preemption
notice) saves a checkpoint and exits cleanly; rerunning the same command resumes it. At the end
the last checkpoint is scored on the fold's test split (no epoch is picked on it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from fer_jax import checkpoint as ckpt_lib, cli
from fer_jax import input_pipeline, loop, losses, metrics, parallel, plots, runs, train_state
from fer_jax import workdir as workdir_lib
from fer_jax import xla_defaults
from fer_jax.errors import ConfigError
from tfds_dfew import release

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Trainer:
    """The jitted steps and the static halves (graphdef, optimizer) they close over."""

    graphdef: Any
    tx: optax.GradientTransformation
    mesh: Any
    train_step: Any
    eval_step: Any


def class_weights_of(config, class_counts=None) -> np.ndarray | None:
    """float32[C] loss weights from config.loss.class_weights, or None.

    "" / None: no weights; "balanced": 1 / count of each class (`class_counts`, the training
    split's), normalised to mean 1; "w1,...,wC" or a sequence: those numbers.
    """
    num_classes = int(config.num_classes)
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


def mask_out(inputs: dict, masks: dict, dropped) -> dict:
    """masks with every modality in `dropped` absent (all frames False), as the model treats a missing modality."""
    out = dict(masks)
    for m in dropped:
        first = jax.tree.leaves(inputs[m])[0]
        out[m] = jnp.zeros(first.shape[:2], bool)
    return out


def make_trainer(config, graphdef, tx, mesh, *, class_counts=None, drop_modalities=()) -> Trainer:
    """The jitted steps; class_counts (int[C] of the training split) serve class_weights='balanced'.

    drop_modalities: modalities the evaluation step masks out (fer_jax.evaluate --drop_modality).
    """
    num_classes = int(config.num_classes)
    modalities = tuple(config.modalities)
    smoothing = float(config.loss.get("label_smoothing", 0.0))
    class_weights = class_weights_of(config, class_counts) if tx is not None else None  # tx None: evaluation only
    soft_targets = float(config.loss.get("soft_targets", 0.0) or 0.0)  # weight of the vote distribution
    if not 0.0 <= soft_targets <= 1.0:
        raise ConfigError(f"config.loss.soft_targets={soft_targets}: expected a weight in [0, 1] (0: hard labels).")
    skip_nonfinite = bool(config.get("skip_nonfinite_batches", False))
    schedule = train_state.learning_rate_schedule(config)

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
        logits = model(inputs, mask_out(inputs, masks, drop_modalities), train=False)
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


def evaluate(config, trainer: Trainer, state, split: str | None = None, *, progress: bool = False,
             source=None) -> dict:
    """Confusion matrix and UAR/WAR of `state` over a whole split (every clip counted once)."""
    eval_batch = int(config.get("eval_batch_size", config.batch_size))
    batches, num_batches = input_pipeline.eval_batches(
        config, split, process_index=jax.process_index(), process_count=jax.process_count(), batch_size=eval_batch,
        source=source)
    total = None
    if progress and jax.process_index() == 0:
        batches = tqdm(batches, total=num_batches, desc="evaluate", leave=False)
    for local in batches:
        conf = trainer.eval_step(state, parallel.global_batch(local, trainer.mesh))
        total = conf if total is None else total + conf
    confusion = np.rint(np.asarray(jax.device_get(total))).astype(np.int64)
    return metrics.summarize(confusion, release.CLASS_NAMES)


def describe_setup(config, state, input_shapes, mesh) -> str:
    """The start-up line: parameters, modalities, compute dtype, devices, processes, batch per device."""
    per_device = int(config.batch_size) / max(mesh.size, 1)
    dtype = str(config.model.get("dtype", "float32") or "float32")
    return (f"model: {train_state.param_count(state):,} parameters; modalities "
            f"{ {m: tuple(s) if not isinstance(s, dict) else s for m, s in input_shapes.items()} }; compute dtype "
            f"{dtype} (parameters float32); {mesh.size} {jax.devices()[0].platform} device(s) in "
            f"{jax.process_count()} process(es); batch {config.batch_size} = {per_device:g} per device")


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains config's model on its fold, evaluating on the fold's test split; returns final metrics.

    The result has 'uar', 'war', ... of the last step, or {'stopped': True, 'step': s} when
    SIGTERM stopped the run (a checkpoint of step s was saved; rerun to resume).
    """
    if runs.is_pretraining(config):
        raise ConfigError("this is an OmniVec pretraining config (it has a `pretrain` block); run it with "
                          "python -m fer_jax.pretrain, and train classifiers with configs/fusion.py or frames.py.")
    if "{fold}" in str(config.dataset.name):  # a per-fold dataset: the run records the concrete one
        with config.unlocked():
            config.dataset.name = input_pipeline.dataset_name(config)
    is_main = jax.process_index() == 0
    # -- Workdir: one config per workdir ---------------------------------------------------------
    if is_main:
        workdir_lib.claim(workdir, config)

    # -- Mesh and data (opened once) ---------------------------------------------------------------
    mesh = parallel.make_mesh()
    data = input_pipeline.open_run_data(config)
    train_split, test_split = input_pipeline.fold_split(config, "train"), input_pipeline.fold_split(config, "test")
    if is_main:
        runs.write_input_shapes(workdir, data.input_shapes)

    # -- Model, optimizer, train state --------------------------------------------------------------
    graphdef, tx, state = train_state.init(config, runs.model_builder(config, data.input_shapes))
    train_state.check_batchnorm_batch(config, state, mesh)
    state = jax.device_put(state, parallel.replicated(mesh))
    class_counts = None
    if str(config.loss.get("class_weights", "") or "").strip() == "balanced":
        class_counts = data.class_counts(train_split)
        log.info("class weights (balanced) from training counts %s: %s", class_counts.tolist(),
                 np.round(class_weights_of(config, class_counts), 3).tolist())
    trainer = make_trainer(config, graphdef, tx, mesh, class_counts=class_counts)
    log.info("%s", describe_setup(config, state, data.input_shapes, mesh))

    # -- The loop: resume, train, checkpoint, periodic evaluation -------------------------------------
    def evaluate_test(state):
        return evaluate(config, trainer, state, test_split, source=data.source(test_split))

    metrics_log = workdir_lib.MetricsLog(workdir, enabled=is_main)
    checkpoints = ckpt_lib.RunCheckpoints(workdir, max_to_keep=config.get("keep_checkpoints", 3))
    total, eval_every = int(config.num_train_steps), int(config.get("eval_every", 0) or 0)

    def periodic_eval(step, state):
        if eval_every and step % eval_every == 0 and step != total:
            result = evaluate_test(state)
            metrics_log.write(step, "test", {"uar": result["uar"], "war": result["war"]})
            log.info("step %d: test UAR %.4f WAR %.4f", step, result["uar"], result["war"])

    def stream(start):  # the data position is a function of the step
        return iter(input_pipeline.train_dataset(
            config, process_index=jax.process_index(), process_count=jax.process_count(), start_step=start,
            source=data.source(train_split)))

    done = loop.run(
        config, workdir, state=state, mesh=mesh, train_step=trainer.train_step, stream=stream,
        metrics_log=metrics_log, checkpoints=checkpoints, split="train", every_step=periodic_eval,
        skip_nonfinite=bool(config.get("skip_nonfinite_batches", False)), postfix=("loss", "accuracy"),
        nonfinite_advice="Lower config.optimizer.lr, set config.optimizer.grad_clip_norm, or set "
                         "config.skip_nonfinite_batches=True to skip such batches.")
    result: dict = {"stopped": True, "step": done.step}
    if not done.stopped:
        result = evaluate_test(done.state)
        metrics_log.write(done.step, "test", {"uar": result["uar"], "war": result["war"],
                                              "train_seconds": done.seconds})
        log.info("step %d (final): test UAR %.4f WAR %.4f", done.step, result["uar"], result["war"])
        result.update(stopped=False, step=done.step)
    metrics_log.close()
    checkpoints.close()
    if is_main:
        plots.training_curves_png(workdir_lib.read_metrics(workdir), os.path.join(workdir, "curves.png"),
                                  title=f"{os.path.basename(os.path.normpath(workdir))}: {config.dataset.name}")
    return result


# ----------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------


def fine_tunes_a_generator(config) -> bool:
    """Whether a config trains a pretrained generator end to end (a `generator` tokenizer: convolutions' gradients)."""
    return any(spec.get("tokenizer") == "generator" for spec in config.modalities.values())


def use_training_defaults(config) -> None:
    """The measured CPU training flags for a run that fine-tunes a generator (README 'Performance').

    Only there: on the fusion transformer's cached-features step no flag helped. Call before the
    first JAX computation; a user's own XLA_FLAGS win.
    """
    if config is not None and fine_tunes_a_generator(config):
        xla_defaults.use_training_defaults()


def main(argv):
    use_training_defaults(cli.FLAGS.config)
    config, workdir = cli.config_and_workdir(argv)
    result = train_and_evaluate(config, workdir)
    if jax.process_index() == 0 and not result.get("stopped"):
        print(metrics.format_table(result))
        print(f"wrote {os.path.join(workdir, 'curves.png')}; evaluate again with python -m fer_jax.evaluate "
              f"--workdir {workdir}")


if __name__ == "__main__":
    cli.run(main, doc=__doc__)
