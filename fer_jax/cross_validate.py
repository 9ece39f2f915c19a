"""Cross-validation over a dataset's folds (or its one train/test split) and the modality/fusion ablation.

    python -m fer_jax.cross_validate --config configs/fusion.py:face+pose --workdir runs/fp
    python -m fer_jax.cross_validate --config configs/demo.py:face+pose --workdir runs/ablation \\
        --subsets face,pose,face+pose --fusions concat,early,bottleneck,late --folds 1

    python -m fer_jax.cross_validate --config configs/demo.py --workdir runs/few_labels \\
        --subsets face+pose,omnivec --folds 1 --label_fraction 0.1      # label efficiency

The folds are the dataset's (DFEW and MAFW: 1..5; FERV39k has one train/test split, named `test`).
Each fold trains into <workdir>/[<setup>/]fold<k> (FERV39k: .../test; resumable: a finished fold is
not rerun, an unfinished one resumes from its checkpoint) and is scored on its own test split at
the last step (its eval/ folder gets the evaluation JSON and confusion PNG). Writes
<workdir>/cross_validation.{json,md} (per fold and mean +/- std of UAR and WAR; no std for one
fold) and, for an ablation, one row per setup in the order given and <workdir>/ablation.png.
--label_fraction f trains on a class-stratified fraction f of each fold's training labels (the
same clips for every setup with the same seed); the test split is untouched.

If SIGTERM stops a fold, its checkpoint is saved, nothing is recorded for it, and the command
exits with status 75 and one line; rerunning it resumes that fold.
"""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
from absl import app, flags

from fer_jax import cli, evaluate, input_pipeline, loop, paths, plots, train, workdir as workdir_lib
from fer_jax.errors import ConfigError, RunStopped

flags.DEFINE_string("folds", None, "Comma-separated folds to run (default: every fold of the dataset). Example: "
                    "--folds 1 (a quick look) or --folds 1,2,3,4,5")
flags.DEFINE_string("subsets", None, "Ablation: comma-separated modality subsets, each part of the config's "
                    "modalities. Example: --subsets face,pose,face+pose")
flags.DEFINE_string("fusions", None, "Ablation: comma-separated fusion modes. Example: --fusions "
                    "concat,early,bottleneck,late")
flags.DEFINE_float("label_fraction", None, "Train on this class-stratified fraction of each fold's training labels "
                   "(default: all). Example: --label_fraction 0.1")
FLAGS = flags.FLAGS
log = logging.getLogger(__name__)


def finished_result(workdir: str, num_steps: int) -> dict | None:
    """The final test metrics of a finished run in `workdir`, or None."""
    final = [m for m in workdir_lib.read_metrics(workdir) if m["split"] == "test" and m["step"] == num_steps]
    return final[-1] if final else None


def setup_name(modalities) -> str:
    """'face+pose+omnivec': the modalities in the order given (a config's own, which a ConfigDict sorts: face first)."""
    names = list(modalities)
    if not isinstance(modalities, (list, tuple)):  # a config's modalities: sorted keys
        names = sorted(names, key=lambda m: (m != "face", m))
    return "+".join(names)


def run_folds(config, workdir: str, folds, *, scheme=None, progress: str = "") -> dict:
    """Trains/evaluates each fold (skipping finished ones); returns per-fold and summary metrics.

    scheme: the dataset's split scheme (names the folds: 'fold2', or 'test' for a train/test split).
    progress: what to prefix the per-fold lines with (e.g. 'setup 3/5').
    Raises RunStopped when SIGTERM stops a fold (its checkpoint is saved; nothing is recorded).
    """
    per_fold = {}
    scheme = scheme or input_pipeline.dataset_description(_first_fold(config)).scheme
    for i, k in enumerate(folds, start=1):
        label = scheme.name(k)
        fold_dir = paths.join(workdir, label)
        where = ", ".join(p for p in (progress, f"fold {i}/{len(folds)}" if len(folds) > 1 else "") if p)
        c = copy.deepcopy(config)
        with c.unlocked():
            c.dataset.fold = int(k)
            c.dataset.name = input_pipeline.dataset_name(c)  # e.g. per-fold features '..._x{fold}'
        done = finished_result(fold_dir, int(c.num_train_steps))
        if done is None:
            print(f"{where + ': ' if where else ''}{label}: training in {fold_dir}", flush=True)
            result = train.train_and_evaluate(c, fold_dir)
            if result.get("stopped"):
                raise RunStopped(loop.stopped_message(result, fold_dir, f"{label}") + " Nothing was recorded for it "
                                 "yet; the finished folds are kept.")
            result.update({"step": result["step"], "split": scheme.splits(k)[1], "fold": int(k),
                           "dataset": c.dataset.name, "selection": "last checkpoint (nothing selected on the test "
                           "split)", "dropped_modalities": []})
            evaluate.write_summary(fold_dir, result)
            done = {"uar": result["uar"], "war": result["war"], **({"transductive": result["transductive"]}
                                                                    if result.get("transductive") else {})}
        else:
            print(f"{where + ': ' if where else ''}{label}: already finished in {fold_dir} (UAR "
                  f"{100 * done['uar']:.2f} WAR {100 * done['war']:.2f}); not rerun", flush=True)
        per_fold[label] = {"uar": float(done["uar"]), "war": float(done["war"]),
                           **({"transductive": done["transductive"]} if done.get("transductive") else {})}
        if len(per_fold) > 1 and len(per_fold) < len(folds):  # a running estimate after each fold
            so_far = summarize(per_fold)
            print(f"{where + ': ' if where else ''}estimate over {len(per_fold)} of {len(folds)} folds: UAR "
                  f"{100 * so_far['uar_mean']:.2f} ± {100 * so_far['uar_std']:.2f}, WAR "
                  f"{100 * so_far['war_mean']:.2f} ± {100 * so_far['war_std']:.2f}", flush=True)
    transductive = [f"{fold}: {r['transductive']}" for fold, r in per_fold.items() if r.get("transductive")]
    return {"folds": per_fold, **summarize(per_fold), **({"transductive": transductive} if transductive else {})}


def summarize(per_fold: dict) -> dict:
    """Mean and std (population, ddof=0) of UAR and WAR over the folds (std None for one fold)."""
    out = {}
    for metric in ("uar", "war"):
        values = np.array([v[metric] for v in per_fold.values()], np.float64)
        out[f"{metric}_mean"] = float(values.mean())
        out[f"{metric}_std"] = float(values.std()) if len(values) > 1 else None
    return out


def markdown_table(rows: dict[str, dict]) -> str:
    """Rows {setup name: run_folds result} -> a Markdown table, values in %."""
    folds = list(dict.fromkeys(f for r in rows.values() for f in r["folds"]))  # in the order they ran
    head = "| setup | " + " | ".join(f"{f} UAR / WAR" for f in folds) + " | mean UAR | mean WAR |"
    lines = [head, "|" + "---|" * (len(folds) + 3)]
    for name, r in rows.items():
        cells = [f"{100 * r['folds'][f]['uar']:.2f} / {100 * r['folds'][f]['war']:.2f}" if f in r["folds"] else "-"
                 for f in folds]
        if r.get("transductive"):
            name += " (transductive)"
        def mean(metric):
            std = r[f"{metric}_std"]
            return f"{100 * r[f'{metric}_mean']:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")

        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean('uar')} | {mean('war')} |")
    return "\n".join(lines)


def ablation_setups(config, subsets, fusions):
    """{'face+pose/concat': config, ...}: the config restricted to each subset, in each fusion mode."""
    setups = {}
    for subset in subsets:
        names = subset.split("+")
        unknown = [m for m in names if m not in config.modalities]
        if unknown:
            raise ConfigError(f"--subsets names {unknown}, which the config does not define; it has "
                              f"{list(config.modalities)} (use a config variant with all of them, e.g. :face+pose).")
        for fusion in fusions:
            c = copy.deepcopy(config)
            with c.unlocked():
                for m in list(c.modalities):
                    if m not in names:
                        del c.modalities[m]
                c.model.fusion = fusion
            setups[f"{setup_name(names)}/{fusion}"] = c
    return setups


def write_report(workdir: str, rows: dict[str, dict], *, chart: bool, num_classes: int = 7) -> dict:
    table = markdown_table(rows)
    fractions = {r.get("label_fraction", 1.0) for r in rows.values()}
    note = ("UAR/WAR in %, last checkpoint of each fold (no selection on the test split); "
            "± is the population std over folds." + (f" Trained on a class-stratified {100 * min(fractions):g}% of "
                                                     "each fold's training labels." if min(fractions) < 1 else ""))
    said = [f"{name}: {t}" for name, r in rows.items() for t in r.get("transductive", [])]
    if said:
        note += (" Transductive rows (their pretraining saw the test fold's inputs, allowed by "
                 "config.allow_transductive): " + "; ".join(said) + ".")
    out = {"table": table, "markdown": paths.join(workdir, "cross_validation.md"),
           "json": paths.join(workdir, "cross_validation.json")}
    paths.write_text(out["markdown"], table + "\n\n" + note + "\n")
    paths.write_text(out["json"], json.dumps(rows, indent=2))
    if chart:
        out["chart"] = plots.ablation_png(rows, paths.join(workdir, "ablation.png"), chance=100 / num_classes)
    curves = {f"{name} {fold}": workdir_lib.read_metrics(paths.join(r["workdir"], fold))
              for name, r in rows.items() if "workdir" in r for fold in r["folds"]}
    if curves:
        out["curves"] = plots.setups_curves_png(curves, paths.join(workdir, "curves.png"),
                                                title="training curves of every setup and fold",
                                                chance=100 / num_classes)
    return out


def _first_fold(config):
    """The config at fold 1 (a per-fold dataset name such as '..._x{fold}' needs one to be opened)."""
    c = copy.deepcopy(config)
    with c.unlocked():
        c.dataset.fold = 1
    return c


def main(argv):
    train.use_training_defaults(FLAGS.config)  # fine-tuning a generator: the CPU training flags, before JAX starts
    config, workdir = cli.config_and_workdir(argv)
    description = input_pipeline.dataset_description(_first_fold(config))
    scheme = description.scheme
    if FLAGS.label_fraction is not None:
        if not 0 < FLAGS.label_fraction <= 1:
            raise app.UsageError(f"--label_fraction={FLAGS.label_fraction}: expected a fraction in (0, 1].")
        with config.unlocked():
            config.data.label_fraction = float(FLAGS.label_fraction)
    items = [f.strip() for f in (FLAGS.folds or "").split(",") if f.strip()]
    if FLAGS.folds is not None and (not items or not all(i.isdigit() and int(i) in scheme.folds for i in items)):
        raise ConfigError(f"--folds={FLAGS.folds!r}: {config.dataset.name} has {scheme.describe()}; expected folds "
                          f"among {','.join(map(str, scheme.folds))}.")
    folds = [int(i) for i in items] if items else list(scheme.folds)
    if FLAGS.subsets or FLAGS.fusions:
        subsets = (FLAGS.subsets or setup_name(config.modalities)).split(",")
        fusions = (FLAGS.fusions or config.model.get("fusion", "concat")).split(",")
        setups = ablation_setups(config, subsets, fusions)
        rows = {name: {**run_folds(c, paths.join(workdir, name.replace("/", "_")), folds, scheme=scheme,
                                   progress=f"setup {i}/{len(setups)} ({name})" if len(setups) > 1 else ""),
                       "workdir": paths.join(workdir, name.replace("/", "_"))}
                for i, (name, c) in enumerate(setups.items(), start=1)}
    else:
        rows = {setup_name(config.modalities) + "/" + config.model.get("fusion", "concat"):
                {**run_folds(config, workdir, folds, scheme=scheme), "workdir": workdir}}
    for r in rows.values():
        r["label_fraction"] = float(config.data.get("label_fraction", 1.0) or 1.0)
    report = write_report(workdir, rows, chart=bool(FLAGS.subsets or FLAGS.fusions),
                          num_classes=description.num_classes)
    print(report["table"])
    print("wrote " + ", ".join(v for k, v in report.items() if k != "table"))


if __name__ == "__main__":
    cli.run(main, doc=__doc__)
