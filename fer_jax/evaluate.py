"""Evaluation of a run's checkpoint: UAR, WAR, per-class recall, confusion matrix (JSON + PNG).

    python -m fer_jax.evaluate --workdir runs/demo [--step N] [--split fold1] [--data_dir DIR]
    python -m fer_jax.evaluate --workdir runs/demo --drop_modality pose     # how much does pose add?
    python -m fer_jax.evaluate --workdir runs/dfew_face_f1 --dataset ferv39k  # cross-dataset, shared classes

Writes <workdir>/eval/<split>_step<N>[_without_<modality>].json and the matching _confusion.png.
The default split is the test split of the run's fold; the default step is the newest.
--drop_modality masks one modality (or several, comma-separated) out of every clip, as the model
treats a missing modality, so a multi-modal run shows what each modality contributes.
--dataset scores the run on another dataset's clips through the classes' declared basic emotions
(tfds_dfew.description): only the classes both datasets share count (MAFW's 11 -> DFEW's 7), the
prediction is the argmax over the shared classes' logits, and the JSON says which classes were
left out. A run on cached features needs the other dataset's features from the same generator
setup (the message prints the extract command when they are missing). The default split is the
other dataset's test split of fold 1 (FERV39k: `test`).
"""

from __future__ import annotations

import copy
import json

import jax
from absl import app, flags

from fer_jax import cli, inductive, input_pipeline, metrics, parallel, paths, plots, runs, train, workdir as workdir_lib, xla_defaults
from fer_jax.errors import ConfigError
from tfds_dfew import description as description_lib
from tfds_dfew import features as features_lib

flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the newest). Example: --step 600")
flags.DEFINE_string("split", None, "TFDS split (default: the run's fold test split). Example: --split fold1")
flags.DEFINE_string("data_dir", None, "Override the TFDS data_dir saved in the run's config. Example: --data_dir "
                    "data/tfds")
flags.DEFINE_string("drop_modality", None, "Mask these modalities out of every clip (comma-separated). Example: "
                    "--drop_modality pose")
flags.DEFINE_string("dataset", None, "Score the run on another dataset's clips (the classes both share). Example: "
                    "--dataset ferv39k")
FLAGS = flags.FLAGS


def evaluate_checkpoint(workdir: str, *, step: int | None = None, split: str | None = None,
                        data_dir: str | None = None, drop_modalities=(), write: bool = True,
                        dataset: str | None = None) -> dict:
    """Restores a checkpoint of the run in `workdir` and evaluates it; returns the summary dict.

    dataset: another dataset to score the run on ('ferv39k', ...; the classes both datasets share).
    """
    config = workdir_lib.load_classifier_config(workdir, data_dir)
    runs.load_plugins(workdir)
    dropped = tuple(m for m in drop_modalities if m)
    unknown = [m for m in dropped if m not in config.modalities]
    if unknown:
        raise ConfigError(f"--drop_modality {','.join(unknown)}: the run in {workdir} has modalities "
                          f"{list(config.modalities)}.")
    if dropped and len(dropped) == len(config.modalities):
        raise ConfigError(f"--drop_modality would leave the run in {workdir} no modality to read.")
    trained = runs.run_description(workdir, config)
    data_config, class_map, cross = config, None, None
    if dataset and dataset != trained.name:
        data_config, class_map, cross = cross_dataset(config, trained, dataset)
    mesh = parallel.make_mesh()
    data = input_pipeline.RunData(config=data_config, builder=input_pipeline.open_builder(data_config),
                                  input_shapes={})
    description = data.description
    split = split or data.split_of("test")
    run = runs.restore(workdir, config=config, step=step, sharding=parallel.replicated(mesh),
                       shapes_from_data=lambda c: input_pipeline.example_shapes(c, source=data.source(split)))
    state = {"params": run.params, "model_state": run.model_state}
    trainer = train.make_trainer(config, run.graphdef, None, mesh, drop_modalities=dropped, class_map=class_map,
                                 num_groups=train.num_groups_of(data_config, data))
    names = [description.class_names[j] for j, _ in cross["pairs"]] if cross else None
    summary = train.evaluate(data_config, trainer, state, split, progress=True, source=data.source(split),
                             description=description, class_names=names)
    selection = "last checkpoint (nothing selected on the test split)" if step is None else f"step {step}, as asked"
    summary.update({"step": run.step, "split": split, "fold": int(data_config.dataset.get("fold", 1) or 1),
                    "dataset": data_config.dataset.name, "selection": selection,
                    "dropped_modalities": list(dropped)})
    if cross:
        summary["cross_dataset"] = {k: v for k, v in cross.items() if k != "pairs"}
    transductive = inductive.describe(config, dict(data.builder.info.metadata or {}).get("setup"))
    if transductive and not cross:
        summary["transductive"] = transductive
    if write and jax.process_index() == 0:
        summary.update(write_summary(workdir, summary))
    return summary


def cross_dataset(config, trained, dataset: str):
    """(config reading `dataset`'s clips, class map for make_trainer, what the JSON records) of a cross-dataset run."""
    target_name = description_lib.base_name(dataset)
    c = copy.deepcopy(config)
    name = str(config.dataset.name)
    parsed = features_lib.parse_name(name)
    with c.unlocked():
        c.dataset.name = (f"{features_lib.features_name(target_name)}/{parsed[1]}" if parsed
                          else f"{target_name}/{name.split('/', 1)[1]}" if "/" in name else target_name)
        c.dataset.fold = 1
        c.dataset.group_by = ""
    target = input_pipeline.dataset_description(c)
    with c.unlocked():
        c.dataset.group_by = target.group_by
    pairs, left_target, left_trained = description_lib.shared_classes(trained, target)
    if not pairs:
        raise ConfigError(f"{trained.title} and {target.title} share no class by basic emotion; nothing to score.")
    label_map = [-1] * target.num_classes
    for shared, (j, _) in enumerate(pairs):
        label_map[j] = shared
    record = {"trained_on": trained.name, "evaluated_on": target.name, "pairs": pairs,
              "scored_classes": [target.class_names[j] for j, _ in pairs],
              "as_trained_classes": [trained.class_names[i] for _, i in pairs],
              "left_out_classes": left_target, "unused_logits": left_trained,
              "how": "argmax over the shared classes' logits; clips of a left-out class are not scored"}
    return c, (label_map, [i for _, i in pairs]), record


def write_summary(workdir: str, summary: dict) -> dict:
    """Writes <workdir>/eval/<split>_step<N>[_without_<m>].json and _confusion.png; returns their paths."""
    out_dir = paths.join(workdir, "eval")
    dropped = summary.get("dropped_modalities") or []
    suffix = f"_without_{'_'.join(dropped)}" if dropped else ""
    cross = summary.get("cross_dataset")
    prefix = f"{cross['evaluated_on']}_" if cross else ""  # another dataset's split names are not the run's
    stem = paths.join(out_dir, f"{prefix}{summary['split'].replace('+', '_')}_step{summary['step']}{suffix}")
    paths.write_text(stem + ".json", json.dumps(summary, indent=2))
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
                                  drop_modalities=dropped, dataset=FLAGS.dataset)
    if jax.process_index() == 0:
        without = f", without {', '.join(summary['dropped_modalities'])}" if summary["dropped_modalities"] else ""
        print(f"{summary['dataset']} split {summary['split']}, checkpoint step {summary['step']}{without}")
        cross = summary.get("cross_dataset")
        if cross:
            print(f"trained on {cross['trained_on']}, scored on {cross['evaluated_on']}'s classes "
                  f"{', '.join(cross['scored_classes'])}" + (f"; left out (no counterpart): "
                                                             f"{', '.join(cross['left_out_classes'])}"
                                                             if cross["left_out_classes"] else ""))
        print(metrics.format_table(summary))
        print(f"wrote {summary['json']} and {summary['confusion_png']}")


if __name__ == "__main__":
    xla_defaults.use_inference_defaults()  # inference only: the measured CPU flags, unless XLA_FLAGS is set
    cli.run(main, doc=__doc__)
