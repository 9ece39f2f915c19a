"""Training: `train_and_evaluate(config, workdir)` and `python -m fer_jax.train`.

    python -m fer_jax.train --config configs/demo.py --workdir runs/demo

The run resumes from the newest complete checkpoint in the workdir. SIGTERM (a preemption
notice) saves a checkpoint and exits cleanly; rerunning the same command resumes it. At the end
the last checkpoint is scored on the fold's test split (no epoch is picked on it).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from fer_jax import checkpoint as ckpt_lib, cli
from fer_jax import bundle, hints, inductive, input_pipeline, loop, losses, metrics, parallel, paths, plots, runs
from fer_jax import train_state
from fer_jax import workdir as workdir_lib
from fer_jax import xla_defaults
from fer_jax.errors import ConfigError, RunStopped

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Trainer:
    """The jitted steps and the static halves (graphdef, optimizer) they close over."""

    graphdef: Any
    tx: optax.GradientTransformation
    mesh: Any
    train_step: Any
    eval_step: Any


def resolve_dataset(config, description) -> None:
    """Fills in what a config leaves to its dataset (config.num_classes 0 or absent: the dataset's class count)
    and checks the rest against it (the fold, a num_classes that does not match)."""
    with config.unlocked():
        wanted = int(config.get("num_classes", 0) or 0)
        if wanted and wanted != description.num_classes:
            raise ConfigError(f"config.num_classes={wanted}, but {config.dataset.name} has {description.num_classes} "
                              f"classes ({', '.join(description.class_names)}); leave it at 0 to take the dataset's.")
        config.num_classes = description.num_classes
        if not int(config.data.get("num_frames", 0) or 0):  # T: the frames the dataset stores per clip
            config.data.num_frames = int(description.num_frames)
        if description.group_by and not config.dataset.get("group_by"):
            config.dataset.group_by = description.group_by
    input_pipeline.fold_split(config, "test", description)  # a fold the dataset lacks: one line


def class_weights_of(config, class_counts=None, class_names=None) -> np.ndarray | None:
    """float32[C] loss weights from config.loss.class_weights, or None.

    "" / None: no weights; "balanced": 1 / count of each class (`class_counts`, the training
    split's), normalised to mean 1; "w1,...,wC" or a sequence: those numbers.
    """
    num_classes = input_pipeline.num_classes(config)
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
        order = f" ({', '.join(class_names)})" if class_names else ""
        raise ConfigError(f"config.loss.class_weights={spec!r}: expected '', 'balanced' or {num_classes} "
                          f"non-negative numbers separated by commas, in the dataset's class order{order}.")
    return np.asarray(values, np.float32)


def mask_out(inputs: dict, masks: dict, dropped) -> dict:
    """masks with every modality in `dropped` absent (all frames False), as the model treats a missing modality."""
    out = dict(masks)
    for m in dropped:
        first = jax.tree.leaves(inputs[m])[0]
        out[m] = jnp.zeros(first.shape[:2], bool)
    return out


def make_trainer(config, graphdef, tx, mesh, *, class_counts=None, drop_modalities=(), class_names=None,
                 num_groups: int = 0, class_map=None) -> Trainer:
    """The jitted steps; class_counts (int[C] of the training split) serve class_weights='balanced'.

    drop_modalities: modalities the evaluation step masks out (fer_jax.evaluate --drop_modality).
    class_map: (labels int[C_target] -> shared class or -1, logit columns int[S]): evaluation on another
    dataset (fer_jax.evaluate --dataset) scores only the S classes both share: the prediction is the
    argmax over those S logits, and clips of a class without a counterpart are not counted.
    """
    num_classes = input_pipeline.num_classes(config)
    modalities = tuple(config.modalities)
    smoothing = float(config.loss.get("label_smoothing", 0.0))
    class_weights = class_weights_of(config, class_counts, class_names) if tx is not None else None  # tx None: eval
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
        labels, mask, classes = batch["label"], batch["mask"], num_classes
        if class_map is not None:  # another dataset's clips: its classes that the trained dataset shares
            label_map, columns = (jnp.asarray(a, jnp.int32) for a in class_map)
            labels = label_map[labels]
            mask = mask & (labels >= 0)
            labels = jnp.maximum(labels, 0)
            logits, classes = logits[:, columns], len(class_map[1])
        confusion = metrics.confusion_matrix_jax(labels, logits, mask, classes)
        if not num_groups:
            return confusion
        # one confusion matrix per group (e.g. FERV39k's scene): float32[G, C, C]
        in_group = jax.nn.one_hot(batch["group"], num_groups, dtype=jnp.float32) * mask[:, None]
        true = jax.nn.one_hot(labels, classes, dtype=jnp.float32)
        pred = jax.nn.one_hot(jnp.argmax(logits, -1), classes, dtype=jnp.float32)
        return confusion, jnp.einsum("bg,bc,bd->gcd", in_group, true, pred)

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
             source=None, description=None, class_names=None) -> dict:
    """Confusion matrix and UAR/WAR of `state` over a whole split (every clip counted once).

    description: the dataset's (class names, and the group names of a grouped evaluation such as
    FERV39k's scenes: the result then has `by_<group>`: {group name: uar, war, num_clips}).
    class_names: the names of the confusion matrix's classes when they are not the dataset's (a
    cross-dataset evaluation scores the shared classes only).
    """
    description = description or input_pipeline.dataset_description(config)
    eval_batch = int(config.get("eval_batch_size", config.batch_size))
    batches, num_batches = input_pipeline.eval_batches(
        config, split, process_index=jax.process_index(), process_count=jax.process_count(), batch_size=eval_batch,
        source=source)
    total = None
    if progress and jax.process_index() == 0:
        batches = tqdm(batches, total=num_batches, desc="evaluate", leave=False)
    for local in batches:
        conf = trainer.eval_step(state, parallel.global_batch(local, trainer.mesh))
        total = conf if total is None else jax.tree.map(lambda a, b: a + b, total, conf)
    fetched = jax.device_get(total)
    grouped = None
    if isinstance(fetched, tuple):
        fetched, grouped = fetched
    confusion = np.rint(np.asarray(fetched)).astype(np.int64)
    names = list(class_names or description.class_names)
    result = metrics.summarize(confusion, names)
    if grouped is not None:
        result[f"by_{config.dataset.group_by}"] = {
            group: {k: v for k, v in metrics.summarize(np.rint(g).astype(np.int64), names).items()
                    if k in ("uar", "war", "num_clips")}
            for group, g in zip(group_names(config, source), np.asarray(grouped)) if g.sum() > 0}
    return result


def group_names(config, source) -> list[str]:
    """The names of config.dataset.group_by's values (a ClassLabel field of the dataset, e.g. 'scene')."""
    info = getattr(source, "dataset_info", None)
    if info is None:
        info = input_pipeline.open_builder(config).info
    return list(info.features[config.dataset.group_by].names)


def num_groups_of(config, data) -> int:
    """How many groups a grouped evaluation has (0: none)."""
    key = str(config.dataset.get("group_by", "") or "")
    if not key or key not in data.builder.info.features:
        return 0
    return int(data.builder.info.features[key].num_classes)


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
    # -- Mesh and data (opened once); what the config leaves to the dataset --------------------------
    mesh = parallel.make_mesh()
    data = input_pipeline.open_run_data(config)
    resolve_dataset(config, data.description)
    train_split, test_split = data.split_of("train"), data.split_of("test")
    # a pretraining run behind the inputs that saw the test fold: refused unless allow_transductive
    transductive = inductive.check(config, dict(data.builder.info.metadata or {}).get("setup"))
    if is_main:  # a workdir holding a run of another config is refused before anything is built
        workdir_lib.check_claim(workdir, config)

    # -- Model, optimizer, train state --------------------------------------------------------------
    resuming = ckpt_lib.has_finished(workdir)  # the restore overwrites every weight: none is loaded first
    build = runs.model_builder(config, data.input_shapes, pretrained=not resuming,
                               workdir=workdir if resuming else None)
    graphdef, tx, state = train_state.init(config, build)
    train_state.check_batchnorm_batch(config, state, mesh)
    state = jax.device_put(state, parallel.replicated(mesh))
    class_counts = None
    if str(config.loss.get("class_weights", "") or "").strip() == "balanced":
        class_counts = data.class_counts(train_split)
        log.info("class weights (balanced) from training counts %s: %s", class_counts.tolist(),
                 np.round(class_weights_of(config, class_counts), 3).tolist())
    trainer = make_trainer(config, graphdef, tx, mesh, class_counts=class_counts,
                           class_names=data.description.class_names, num_groups=num_groups_of(config, data))
    log.info("%s", describe_setup(config, state, data.input_shapes, mesh))
    warn_missing_classes(data, train_split)

    # -- Workdir: claimed (config.json, input shapes, the run's record) only now that the run can start --
    if is_main:
        workdir_lib.claim(workdir, config)
        runs.write_input_shapes(workdir, data.input_shapes)
        record = runs.write_record(workdir, config, data)
        bundle.write(workdir, config, record)  # what predict needs besides the run's own files

    # -- The loop: resume, train, checkpoint, periodic evaluation -------------------------------------
    def evaluate_test(state):
        return evaluate(config, trainer, state, test_split, source=data.source(test_split),
                        description=data.description)

    metrics_log = workdir_lib.MetricsLog(workdir, enabled=is_main)
    checkpoints = ckpt_lib.RunCheckpoints(workdir, max_to_keep=config.get("keep_checkpoints", 3),
                                         async_save=bool(config.get("async_checkpointing", True)))
    total, eval_every = int(config.num_train_steps), int(config.get("eval_every", 0) or 0)

    def periodic_eval(step, state):
        if eval_every and step % eval_every == 0 and step != total:
            result = evaluate_test(state)
            metrics_log.write(step, "test", {"uar": result["uar"], "war": result["war"]})
            log.info("step %d: test UAR %.4f WAR %.4f", step, result["uar"], result["war"])
            if is_main:  # on the console too, not only in metrics.jsonl
                tqdm.write(f"step {step}: {test_split} UAR {100 * result['uar']:.2f} WAR {100 * result['war']:.2f}")

    def stream(start):  # the data position is a function of the step
        return iter(input_pipeline.train_dataset(
            config, process_index=jax.process_index(), process_count=jax.process_count(), start_step=start,
            source=data.source(train_split)))

    done = loop.run(
        config, workdir, state=state, mesh=mesh, train_step=trainer.train_step, stream=stream,
        metrics_log=metrics_log, checkpoints=checkpoints, split="train", initialised=not resuming,
        every_step=periodic_eval,
        skip_nonfinite=bool(config.get("skip_nonfinite_batches", False)), postfix=("loss", "accuracy"),
        nonfinite_advice="Lower config.optimizer.lr, set config.optimizer.grad_clip_norm, or set "
                         "config.skip_nonfinite_batches=True to skip such batches.")
    result: dict = {"stopped": True, "step": done.step, "signal": done.signal_name}
    if not done.stopped:
        result = evaluate_test(done.state)
        metrics_log.write(done.step, "test", {"uar": result["uar"], "war": result["war"],
                                              "train_seconds": done.seconds,
                                              **({"transductive": transductive} if transductive else {})})
        log.info("step %d (final): test UAR %.4f WAR %.4f", done.step, result["uar"], result["war"])
        result.update(stopped=False, step=done.step)
        if transductive:
            result["transductive"] = transductive
    metrics_log.close()
    checkpoints.close()
    if is_main:
        plots.training_curves_png(workdir_lib.read_metrics(workdir), paths.join(workdir, "curves.png"),
                                  title=f"{paths.basename(workdir)}: {config.dataset.name}",
                                  chance=100 / data.description.num_classes)
    return result


def warn_missing_classes(data, train_split: str) -> None:
    """A warning at start-up when the training split has no clip of some class (it can never be learnt)."""
    counts = data.class_counts(train_split)
    empty = [n for n, c in zip(data.description.class_names, counts) if c == 0]
    if empty:
        log.warning("the training split %s has no clip of %s: the model cannot learn %s. Check the dataset "
                    "(python -m tfds_dfew.build prints its class counts) or train on another fold.", train_split,
                    ", ".join(empty), "it" if len(empty) == 1 else "them")


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
    if result.get("stopped"):
        raise RunStopped(loop.stopped_message(result, workdir))
    if jax.process_index() == 0:
        print(metrics.format_table(result))
        print(f"wrote {paths.join(workdir, 'curves.png')}; evaluate again with "
              + hints.command("python", "-m", "fer_jax.evaluate", "--workdir", workdir))



if __name__ == "__main__":
    cli.run(main, doc=__doc__)
