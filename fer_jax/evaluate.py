"""Evaluation of a run's checkpoint: UAR, WAR, per-class recall, confusion matrix (JSON + PNG).

    python -m fer_jax.evaluate --workdir runs/demo [--step N] [--split fold1] [--data_dir DIR]
    python -m fer_jax.evaluate --workdir runs/demo --drop_modality pose     # how much does pose add?

Writes <workdir>/eval/<split>_step<N>[_without_<modality>].json and the matching _confusion.png.
The default split is the test split of the run's fold; the default step is the newest.
--drop_modality masks one modality (or several, comma-separated) out of every clip, as the model
treats a missing modality, so a multi-modal run shows what each modality contributes.
"""

from __future__ import annotations

import json
import os

import jax
from absl import app, flags

from fer_jax import cli, input_pipeline, metrics, parallel, plots, runs, train, workdir as workdir_lib, xla_defaults
from fer_jax.errors import ConfigError

flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the newest). Example: --step 600")
flags.DEFINE_string("split", None, "TFDS split (default: the run's fold test split). Example: --split fold1")
flags.DEFINE_string("data_dir", None, "Override the TFDS data_dir saved in the run's config. Example: --data_dir "
                    "data/tfds")
flags.DEFINE_string("drop_modality", None, "Mask these modalities out of every clip (comma-separated). Example: "
                    "--drop_modality pose")
FLAGS = flags.FLAGS


def evaluate_checkpoint(workdir: str, *, step: int | None = None, split: str | None = None,
                        data_dir: str | None = None, drop_modalities=(), write: bool = True) -> dict:
    """Restores a checkpoint of the run in `workdir` and evaluates it; returns the summary dict."""
    config = workdir_lib.load_classifier_config(workdir, data_dir)
    dropped = tuple(m for m in drop_modalities if m)
    unknown = [m for m in dropped if m not in config.modalities]
    if unknown:
        raise ConfigError(f"--drop_modality {','.join(unknown)}: the run in {workdir} has modalities "
                          f"{list(config.modalities)}.")
    if dropped and len(dropped) == len(config.modalities):
        raise ConfigError(f"--drop_modality would leave the run in {workdir} no modality to read.")
    mesh = parallel.make_mesh()
    split = split or input_pipeline.fold_split(config, "test")
    data = input_pipeline.RunData(config=config, builder=input_pipeline.open_builder(config), input_shapes={})
    run = runs.restore(workdir, config=config, step=step, sharding=parallel.replicated(mesh),
                       shapes_from_data=lambda c: input_pipeline.example_shapes(c, source=data.source(split)))
    state = {"params": run.params, "model_state": run.model_state}
    trainer = train.make_trainer(config, run.graphdef, None, mesh, drop_modalities=dropped)
    summary = train.evaluate(config, trainer, state, split, progress=True, source=data.source(split))
    selection = "last checkpoint (nothing selected on the test split)" if step is None else f"step {step}, as asked"
    summary.update({"step": run.step, "split": split, "fold": int(config.dataset.fold),
                    "dataset": config.dataset.name, "selection": selection,
                    "dropped_modalities": list(dropped)})
    if write and jax.process_index() == 0:
        summary.update(write_summary(workdir, summary))
    return summary


def write_summary(workdir: str, summary: dict) -> dict:
    """Writes <workdir>/eval/<split>_step<N>[_without_<m>].json and _confusion.png; returns their paths."""
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    dropped = summary.get("dropped_modalities") or []
    suffix = f"_without_{'_'.join(dropped)}" if dropped else ""
    stem = os.path.join(out_dir, f"{summary['split'].replace('+', '_')}_step{summary['step']}{suffix}")
    with open(stem + ".json", "w") as f:
        json.dump(summary, f, indent=2)
    without = f" without {', '.join(dropped)}" if dropped else ""
    png = plots.confusion_matrix_png(
        summary["confusion_matrix"], summary["class_names"], stem + "_confusion.png",
        title=f"{summary['dataset']} {summary['split']}, step {summary['step']}{without}: "
              f"UAR {100 * summary['uar']:.1f} WAR {100 * summary['war']:.1f}")
    return {"json": stem + ".json", "confusion_png": png}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required, e.g. --workdir runs/demo")
    dropped = tuple((FLAGS.drop_modality or "").split(","))
    summary = evaluate_checkpoint(FLAGS.workdir, step=FLAGS.step, split=FLAGS.split, data_dir=FLAGS.data_dir,
                                  drop_modalities=dropped)
    if jax.process_index() == 0:
        without = f", without {', '.join(summary['dropped_modalities'])}" if summary["dropped_modalities"] else ""
        print(f"{summary['dataset']} split {summary['split']}, checkpoint step {summary['step']}{without}")
        print(metrics.format_table(summary))
        print(f"wrote {summary['json']} and {summary['confusion_png']}")


if __name__ == "__main__":
    xla_defaults.use_inference_defaults()  # inference only: the measured CPU flags, unless XLA_FLAGS is set
    cli.run(main, doc=__doc__)
