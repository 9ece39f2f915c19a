"""OmniVec pretraining: masked-token reconstruction across modalities, on every clip, no labels.

    python -m fer_jax.pretrain --config configs/omnivec.py --workdir runs/omnivec

Reads a cached-features dataset (face features + OpenPose keypoints, see configs/omnivec.py)
over all its stored splits (`fold1`..`fold5` and `unlabelled`, the multi-labelled clips) unless
`config.pretrain.exclude_fold` leaves a test fold out. Labels are never read. The run resumes
from its newest checkpoint like `fer_jax.train` (the data position is a function of the step),
and SIGTERM saves and exits. At the end it reports the reconstruction loss over the whole
pretraining split with a fixed masking (1.0 is what predicting zeros would score: the targets
are standardised per token).

The trained network is then a generator: extract it into cached features with
`python -m fer_jax.extract --config configs/extract.py:omnivec,run=runs/omnivec`, or fine-tune it
inside the fusion model (tokenizer `omnivec`, see configs/fusion.py's `omnivec_finetune`).
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fer_jax import checkpoint as ckpt_lib
from fer_jax import input_pipeline, parallel, train, workdir as workdir_lib
from fer_jax.errors import ConfigError
from fer_jax.models import omnivec as omnivec_lib, registry

log = logging.getLogger(__name__)

SHAPES_FILE = "omnivec.json"  # input shapes of the run's modalities, to rebuild the network later


def pretrain_split(config) -> str:
    """The TFDS split string of every stored split except `config.pretrain.exclude_fold` (0 = none)."""
    splits = input_pipeline.dataset_splits(config)
    exclude = int(config.pretrain.get("exclude_fold", 0) or 0)
    if exclude and f"fold{exclude}" not in splits:
        raise ConfigError(f"config.pretrain.exclude_fold={exclude}: {config.dataset.name} has no split "
                          f"fold{exclude} (it has {splits}).")
    kept = [s for s in splits if s != f"fold{exclude}"]
    return "+".join(kept)


def _masks(batch, modalities):
    """{modality: bool[B, T]}: the batch's frame masks, all True for modalities without one."""
    inputs, masks = input_pipeline.model_inputs(batch, modalities)
    return inputs, {m: masks.get(m, jnp.ones(inputs[m].shape[:2], bool)) for m in modalities}


def make_steps(config, graphdef, tx, mesh):
    """(train_step, loss_step) jitted over the data mesh.

    train_step(state, batch, key) -> (state, stats); loss_step(state, batch, key) -> (sum of
    squared errors over hidden tokens, their count) with the masking drawn from `key`.
    """
    modalities = tuple(config.modalities)
    p = config.pretrain
    mask_ratio, modality_prob = float(p.mask_ratio), float(p.modality_mask_prob)
    schedule = train.learning_rate_schedule(config)

    def hidden_of(key, masks):
        present = jnp.stack([masks[m] for m in modalities], axis=1)
        hidden = omnivec_lib.sample_hidden(key, present, mask_ratio=mask_ratio, modality_mask_prob=modality_prob)
        return {m: hidden[:, i] for i, m in enumerate(modalities)}

    def train_step(state, batch, key):
        inputs, masks = _masks(batch, modalities)
        mask_key, dropout_key = jax.random.split(key)
        hidden = hidden_of(mask_key, masks)

        def loss_fn(params, model_state):
            model = nnx.merge(graphdef, params, model_state, copy=True)
            loss, per = model.reconstruction_loss(inputs, masks, hidden, batch["mask"], train=True,
                                                  rngs=nnx.Rngs(dropout=dropout_key))
            return loss, (per, nnx.state(model, nnx.Not(nnx.Param)))

        (loss, (per, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["model_state"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = {"params": optax.apply_updates(state["params"], updates), "model_state": model_state,
               "opt_state": opt_state, "step": state["step"] + 1}
        grad_norm = optax.global_norm(grads)
        stats = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state["step"]),
                 "finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm),
                 **{f"loss_{m}": v for m, v in per.items()}}
        return new, stats

    def loss_step(state, batch, key):
        inputs, masks = _masks(batch, modalities)
        hidden = hidden_of(key, masks)
        model = nnx.merge(graphdef, state["params"], state["model_state"])
        loss, _ = model.reconstruction_loss(inputs, masks, hidden, batch["mask"], train=False)
        count = sum((hidden[m] & batch["mask"][:, None]).sum() for m in modalities)
        return loss * count, count

    repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    return (jax.jit(train_step, in_shardings=(repl, data, repl), out_shardings=(repl, repl), donate_argnums=(0,)),
            jax.jit(loss_step, in_shardings=(repl, data, repl), out_shardings=repl))


def reconstruction_loss(config, loss_step, state, split: str, mesh) -> float:
    """Mean reconstruction error over every clip of `split`, masking drawn from a fixed key."""
    batches, _ = input_pipeline.eval_batches(config, split, process_index=jax.process_index(),
                                             process_count=jax.process_count())
    key = jax.random.key(int(config.seed) + 12345)
    total = count = 0.0
    for i, local in enumerate(batches):
        s, c = jax.device_get(loss_step(state, parallel.global_batch(local, mesh), jax.random.fold_in(key, i)))
        total, count = total + float(s), count + float(c)
    return total / max(count, 1.0)


def pretrain(config, workdir: str) -> dict:
    """Pretrains config's OmniVec; returns {'reconstruction_loss', 'steps', 'clips'}."""
    if "pretrain" not in config:
        raise ConfigError("this config has no `pretrain` block; pretraining takes configs/omnivec.py.")
    if config.data.get("sampler", "shuffle") != "shuffle":
        raise ConfigError(f"config.data.sampler={config.data.sampler!r}: pretraining reads every clip once per "
                          "epoch ('shuffle'); a label-based sampler would leave out the unlabelled clips.")
    is_main = jax.process_index() == 0
    if is_main:
        workdir_lib.claim(workdir, config)
    split = pretrain_split(config)
    mesh = parallel.make_mesh()
    shapes = input_pipeline.example_shapes(config, split)
    if is_main:
        with open(os.path.join(workdir, SHAPES_FILE), "w") as f:
            json.dump({"input_shapes": {m: list(s) for m, s in shapes.items()}}, f, indent=2)
    graphdef, tx, state = train.init_state(config, shapes, build=registry.build_omnivec)
    train.check_batchnorm_batch(config, state, mesh)
    state = jax.device_put(state, parallel.replicated(mesh))
    train_step, loss_step = make_steps(config, graphdef, tx, mesh)
    num_clips = len(input_pipeline.open_source(config, split))
    log.info("OmniVec: %s parameters; modalities %s; %d clips in %s", f"{train.param_count(state):,}",
             {m: tuple(s) for m, s in shapes.items()}, num_clips, split)

    checkpoints = ckpt_lib.RunCheckpoints(workdir, max_to_keep=config.get("keep_checkpoints", 2))
    start = checkpoints.latest_step() or 0
    if start:
        state, _ = checkpoints.restore(start, ckpt_lib.abstract_like(state, parallel.replicated(mesh)))
        log.info("resumed from checkpoint at step %d in %s", start, checkpoints.directory)
    stream = iter(input_pipeline.train_dataset(config, split=split, process_index=jax.process_index(),
                                               process_count=jax.process_count(), start_step=start))
    metrics_log = workdir_lib.MetricsLog(workdir, enabled=is_main, resume_step=start)
    total, log_every = int(config.num_train_steps), int(config.log_every)
    ckpt_every = int(config.get("checkpoint_every", 0) or 0)
    base_key = jax.random.key(int(config.seed))
    pending = []
    bar = None
    if is_main and config.get("progress_bar", True):
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc="pretrain", unit="step", dynamic_ncols=True)

    def flush(step):
        if not pending:
            return
        fetched = jax.device_get(pending)
        bad = next((v for v in fetched if not v["finite"]), None)
        if bad is not None:
            raise train.NonFiniteLossError(
                f"near step {step}: the reconstruction loss is not finite (loss={float(bad['loss'])}). The last good "
                f"checkpoint (step {checkpoints.latest_step()}) is kept in {checkpoints.directory}; lower "
                "config.optimizer.lr and rerun in a new --workdir.")
        mean = {k: float(np.mean([v[k] for v in fetched])) for k in fetched[0] if k != "finite"}
        metrics_log.write(step, "pretrain", mean)
        if bar is not None:
            bar.set_postfix(loss=f"{mean['loss']:.3f}")
        pending.clear()

    def save(step):
        if checkpoints.latest_step() != step:
            checkpoints.save(step, state, meta={"step": step, "config": workdir_lib.config_to_dict(config)})

    step = start
    t0 = time.time()
    with train._Preemption() as preemption:
        while step < total:
            batch = parallel.global_batch(next(stream), mesh)
            state, stats = train_step(state, batch, jax.random.fold_in(base_key, step))
            step += 1
            pending.append(stats)
            if bar is not None:
                bar.update(1)
            if step % log_every == 0 or step == total:
                flush(step)
            if (ckpt_every and step % ckpt_every == 0) or step == total or preemption.requested:
                flush(step)
                save(step)
            if preemption.requested:
                log.warning("SIGTERM received: saved a checkpoint at step %d; rerun the same command to resume.", step)
                break
    if bar is not None:
        bar.close()
    result = {"steps": step, "clips": num_clips}
    if step >= total:
        result["reconstruction_loss"] = reconstruction_loss(config, loss_step, state, split, mesh)
        metrics_log.write(step, "pretrain_eval", {"reconstruction_loss": result["reconstruction_loss"],
                                                  "train_seconds": time.time() - t0})
        log.info("step %d: reconstruction loss %.4f over %d clips (predicting zeros scores 1.0)", step,
                 result["reconstruction_loss"], num_clips)
    metrics_log.close()
    checkpoints.close()
    return result


def omnivec_from_run(workdir: str, *, load: bool = True, inputs: dict | None = None):
    """The OmniVec network of a pretraining run (newest checkpoint) -> (module, report).

    inputs: the {modality: dataset key} the caller will feed; it must match the run's. The
    module is rebuilt with dropout 0 (a generator's features are deterministic).
    """
    workdir = os.path.expanduser(workdir)
    config = workdir_lib.load_config(workdir)
    if "pretrain" not in config:
        raise ConfigError(f"{workdir} is not an OmniVec pretraining run (its config has no `pretrain` block); "
                          "pass the --workdir of `python -m fer_jax.pretrain`.")
    run_inputs = {m: spec.input for m, spec in config.modalities.items()}
    if inputs and dict(inputs) != run_inputs:
        raise ConfigError(f"the OmniVec of {workdir} reads {run_inputs}, but it is given {dict(inputs)}; "
                          "feed it the same dataset features it was pretrained on.")
    shapes_path = os.path.join(workdir, SHAPES_FILE)
    if not os.path.exists(shapes_path):
        raise FileNotFoundError(f"{shapes_path} not found: the pretraining run in {workdir} never started.")
    with open(shapes_path) as f:
        shapes = {m: tuple(s) for m, s in json.load(f)["input_shapes"].items()}
    config.model.dropout = 0.0
    graphdef, _, state = train.init_state(config, shapes, build=registry.build_omnivec)
    report = "random initialisation (pretrained=False)"
    if load:
        checkpoints = ckpt_lib.RunCheckpoints(workdir, read_only=True)
        step = checkpoints.latest_step()
        if step is None:
            raise FileNotFoundError(f"{checkpoints.directory} holds no complete checkpoint; finish the pretraining "
                                    f"run first (rerun its command to resume it).")
        state, _ = checkpoints.restore(step, ckpt_lib.abstract_like(state, parallel.replicated(parallel.make_mesh())))
        checkpoints.close()
        report = f"OmniVec from {workdir} step {step}"
    encoder = nnx.merge(graphdef, state["params"], state["model_state"]).encoder
    return encoder, report


def main(argv):
    from fer_jax import cli

    config, workdir = cli.config_and_workdir(argv)
    result = pretrain(config, workdir)
    if jax.process_index() == 0 and "reconstruction_loss" in result:
        print(f"OmniVec pretrained for {result['steps']} steps on {result['clips']} clips; reconstruction loss "
              f"{result['reconstruction_loss']:.4f} (1.0 = predicting zeros). Extract it with: python -m "
              f"fer_jax.extract --config configs/extract.py:omnivec,run={workdir}")


if __name__ == "__main__":
    from fer_jax import cli

    cli.run(main)
