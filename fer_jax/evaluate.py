"""Evaluation of a run's checkpoint: UAR, WAR, per-class recall, confusion matrix (JSON + PNG).

    python -m fer_jax.evaluate --workdir runs/demo [--step N] [--split fold1]

Writes <workdir>/eval/<split>_step<N>.json and <workdir>/eval/<split>_step<N>_confusion.png.
The default split is the test split of the run's fold; the default step is the newest.
"""

from __future__ import annotations

import json
import os

import jax
from absl import flags

from fer_jax import checkpoint as ckpt_lib
from fer_jax import input_pipeline, metrics, parallel, plots, workdir as workdir_lib

flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the newest).")
flags.DEFINE_string("split", None, "TFDS split (default: the run's fold test split, e.g. fold1).")
flags.DEFINE_string("data_dir", None, "Override the TFDS data_dir saved in the run's config.")
FLAGS = flags.FLAGS


def evaluate_checkpoint(workdir: str, *, step: int | None = None, split: str | None = None,
                        data_dir: str | None = None) -> dict:
    """Restores a checkpoint of the run in `workdir` and evaluates it; returns the summary dict."""
    from fer_jax import train

    config = workdir_lib.load_classifier_config(workdir, data_dir)
    checkpoints = ckpt_lib.RunCheckpoints(workdir, read_only=True)
    steps = checkpoints.all_steps()
    if not steps:
        raise FileNotFoundError(f"{checkpoints.directory} holds no complete checkpoint; train first.")
    selection = "last checkpoint (nothing selected on the test split)" if step is None else f"step {step}, as asked"
    step = steps[-1] if step is None else int(step)
    if step not in steps:
        raise FileNotFoundError(f"{checkpoints.directory} has no checkpoint at step {step}; it has {steps}.")
    split = split or input_pipeline.fold_split(config, "test")

    mesh = parallel.make_mesh()
    graphdef, tx, state = train.init_state(config, input_pipeline.example_shapes(config))
    abstract = ckpt_lib.abstract_like(state, parallel.replicated(mesh))
    state, _ = checkpoints.restore(step, abstract)
    checkpoints.close()
    trainer = train.make_trainer(config, graphdef, tx, mesh)
    summary = train.evaluate(config, trainer, state, split, progress=True)
    summary.update({"step": step, "split": split, "fold": int(config.dataset.fold),
                    "dataset": config.dataset.name, "selection": selection})
    if jax.process_index() == 0:
        out_dir = os.path.join(workdir, "eval")
        os.makedirs(out_dir, exist_ok=True)
        stem = os.path.join(out_dir, f"{split.replace('+', '_')}_step{step}")
        with open(stem + ".json", "w") as f:
            json.dump(summary, f, indent=2)
        summary["confusion_png"] = plots.confusion_matrix_png(
            summary["confusion_matrix"], summary["class_names"], stem + "_confusion.png",
            title=f"{config.dataset.name} {split}, step {step}: UAR {100 * summary['uar']:.1f} "
                  f"WAR {100 * summary['war']:.1f}")
        summary["json"] = stem + ".json"
    return summary


def main(argv):
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    summary = evaluate_checkpoint(FLAGS.workdir, step=FLAGS.step, split=FLAGS.split, data_dir=FLAGS.data_dir)
    if jax.process_index() == 0:
        print(f"{summary['dataset']} split {summary['split']}, checkpoint step {summary['step']}")
        print(metrics.format_table(summary))
        print(f"wrote {summary['json']} and {summary['confusion_png']}")


if __name__ == "__main__":
    from fer_jax import cli

    cli.run(main)
