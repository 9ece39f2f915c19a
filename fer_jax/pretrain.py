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

import logging

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fer_jax import checkpoint as ckpt_lib, cli
from fer_jax import hints, input_pipeline, loop, parallel, paths, plots, runs, train_state
from fer_jax import workdir as workdir_lib
from fer_jax.errors import ConfigError, RunStopped
from fer_jax.models import omnivec as omnivec_lib
from tfds_dfew import datasets

log = logging.getLogger(__name__)


def pretrain_split(config, splits: list[str], scheme=None) -> str:
    """The TFDS split string of every stored split (`splits`) except the test split of `config.pretrain.exclude_fold`
    (0 = none: transductive). scheme: the dataset's split scheme (names the test split: 'fold2', or 'test')."""
    exclude = int(config.pretrain.get("exclude_fold", 0) or 0)
    if not exclude:
        return "+".join(splits)
    try:
        left_out = scheme.name(exclude) if scheme is not None else f"fold{exclude}"
    except ValueError as e:
        raise ConfigError(f"config.pretrain.exclude_fold={exclude}: {e} ({config.dataset.name}).") from None
    if left_out not in splits:
        raise ConfigError(f"config.pretrain.exclude_fold={exclude}: {config.dataset.name} has no split "
                          f"{left_out} (it has {splits}).")
    return "+".join(s for s in splits if s != left_out)


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
    schedule = train_state.learning_rate_schedule(config)

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


def reconstruction_loss(config, loss_step, state, split: str, mesh, *, source=None) -> float:
    """Mean reconstruction error over every clip of `split`, masking drawn from a fixed key."""
    batches, _ = input_pipeline.eval_batches(config, split, process_index=jax.process_index(),
                                             process_count=jax.process_count(), source=source)
    key = jax.random.key(int(config.seed) + 12345)
    total = count = 0.0
    for i, local in enumerate(batches):
        s, c = jax.device_get(loss_step(state, parallel.global_batch(local, mesh), jax.random.fold_in(key, i)))
        total, count = total + float(s), count + float(c)
    return total / max(count, 1.0)


def pretrain(config, workdir: str) -> dict:
    """Pretrains config's OmniVec; returns {'reconstruction_loss', 'steps', 'clips'} (or 'stopped': True)."""
    if not runs.is_pretraining(config):
        raise ConfigError("this config has no `pretrain` block; pretraining takes configs/omnivec.py.")
    if config.data.get("sampler", "shuffle") != "shuffle":
        raise ConfigError(f"config.data.sampler={config.data.sampler!r}: pretraining reads every clip once per "
                          "epoch ('shuffle'); a label-based sampler would leave out the unlabelled clips.")
    is_main = jax.process_index() == 0
    mesh = parallel.make_mesh()
    builder = input_pipeline.open_builder(config)
    scheme = datasets.description_of(builder).scheme
    split = pretrain_split(config, sorted(builder.info.splits.keys()), scheme)
    exclude = int(config.pretrain.get("exclude_fold", 0) or 0)
    log.info("pretraining on %s: %s", split, f"inductive, test split {scheme.name(exclude)} left out" if exclude
             else "transductive, the test folds' inputs included (classifier runs using it must allow it)")
    data = input_pipeline.RunData(config=config, builder=builder, input_shapes={})
    with config.unlocked():  # T: the frames the dataset stores per clip, unless the config says
        if not int(config.data.get("num_frames", 0) or 0):
            config.data.num_frames = int(data.description.num_frames)
    if is_main:
        workdir_lib.check_claim(workdir, config)
    source = data.source(split)
    data.input_shapes = input_pipeline.example_shapes(config, source=source)
    resuming = ckpt_lib.has_finished(workdir)  # the restore overwrites every weight: none is loaded first
    build = runs.model_builder(config, data.input_shapes, pretrained=not resuming,
                               workdir=workdir if resuming else None)
    graphdef, tx, state = train_state.init(config, build)
    if is_main:  # the workdir is claimed only now that the run can start
        workdir_lib.claim(workdir, config)
        runs.write_input_shapes(workdir, data.input_shapes)
        runs.write_record(workdir, config, data)
    train_state.check_batchnorm_batch(config, state, mesh)
    state = jax.device_put(state, parallel.replicated(mesh))
    train_step, loss_step = make_steps(config, graphdef, tx, mesh)
    num_clips = len(source)
    log.info("OmniVec: %s parameters; modalities %s; %d clips in %s; compute dtype %s; %d device(s) in %d "
             "process(es)", f"{train_state.param_count(state):,}",
             {m: tuple(s) for m, s in data.input_shapes.items()}, num_clips, split,
             config.model.get("dtype", "float32"), mesh.size, jax.process_count())

    def stream(start):
        return iter(input_pipeline.train_dataset(config, split=split, process_index=jax.process_index(),
                                                 process_count=jax.process_count(), start_step=start, source=source))

    metrics_log = workdir_lib.MetricsLog(workdir, enabled=is_main)
    checkpoints = ckpt_lib.RunCheckpoints(workdir, max_to_keep=config.get("keep_checkpoints", 2),
                                         async_save=bool(config.get("async_checkpointing", True)))
    done = loop.run(config, workdir, state=state, mesh=mesh, train_step=train_step, stream=stream,
                    metrics_log=metrics_log, checkpoints=checkpoints, split="pretrain", initialised=not resuming)
    result = {"steps": done.step, "step": done.step, "clips": num_clips, "stopped": done.stopped,
              "signal": done.signal_name}
    if not done.stopped:
        result["reconstruction_loss"] = reconstruction_loss(config, loss_step, done.state, split, mesh, source=source)
        metrics_log.write(done.step, "pretrain_eval", {"reconstruction_loss": result["reconstruction_loss"],
                                                       "train_seconds": done.seconds})
        log.info("step %d: reconstruction loss %.4f over %d clips (predicting zeros scores 1.0)", done.step,
                 result["reconstruction_loss"], num_clips)
    metrics_log.close()
    checkpoints.close()
    if is_main:
        plots.training_curves_png(workdir_lib.read_metrics(workdir), paths.join(workdir, "curves.png"),
                                  title=f"OmniVec pretraining {paths.basename(workdir)}")
    return result


def main(argv):
    config, workdir = cli.config_and_workdir(argv)
    result = pretrain(config, workdir)
    if result.get("stopped"):
        raise RunStopped(loop.stopped_message(result, workdir, "pretraining"))
    if jax.process_index() == 0 and "reconstruction_loss" in result:
        print(f"OmniVec pretrained for {result['steps']} steps on {result['clips']} clips; reconstruction loss "
              f"{result['reconstruction_loss']:.4f} (1.0 = predicting zeros). Extract it with: "
              + hints.command("python", "-m", "fer_jax.extract", "--config",
                              f"configs/extract.py:omnivec,run={workdir}"))


if __name__ == "__main__":
    cli.run(main, doc=__doc__)
