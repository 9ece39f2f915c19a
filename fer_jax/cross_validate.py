"""Five-fold cross-validation and the modality/fusion ablation, with tables and a chart.

    python -m fer_jax.cross_validate --config configs/fusion.py:face+pose --workdir runs/fp
    python -m fer_jax.cross_validate --config configs/demo.py:face+pose --workdir runs/ablation \\
        --subsets face,pose,face+pose --fusions concat,early,bottleneck,late --folds 1

Each fold trains into <workdir>/[<setup>/]fold<k> (resumable: a finished fold is not rerun, an
unfinished one resumes from its checkpoint) and is scored on its own test split at the last step.
Writes <workdir>/cross_validation.{json,md} (per fold and mean +/- std of UAR and WAR) and, for
an ablation, one row per setup and <workdir>/ablation.png.
"""

from __future__ import annotations

import copy
import json
import logging
import os

import numpy as np
from absl import flags

from fer_jax import workdir as workdir_lib

flags.DEFINE_string("folds", "1,2,3,4,5", "Comma-separated folds to run.")
flags.DEFINE_string("subsets", None, "Ablation: comma-separated modality subsets (e.g. face,pose,face+pose); "
                    "each must be part of the config's modalities.")
flags.DEFINE_string("fusions", None, "Ablation: comma-separated fusion modes (concat,early,bottleneck,late).")
FLAGS = flags.FLAGS
log = logging.getLogger(__name__)


def finished_result(workdir: str, num_steps: int) -> dict | None:
    """The final test metrics of a finished run in `workdir`, or None."""
    final = [m for m in workdir_lib.read_metrics(workdir) if m["split"] == "test" and m["step"] == num_steps]
    return final[-1] if final else None


def run_folds(config, workdir: str, folds) -> dict:
    """Trains/evaluates each fold (skipping finished ones); returns per-fold and summary metrics."""
    from fer_jax import input_pipeline, train

    per_fold = {}
    for k in folds:
        fold_dir = os.path.join(workdir, f"fold{k}")
        c = copy.deepcopy(config)
        with c.unlocked():
            c.dataset.fold = int(k)
            c.dataset.name = input_pipeline.dataset_name(c)  # e.g. per-fold features '..._x{fold}'
        done = finished_result(fold_dir, int(c.num_train_steps))
        if done is None:
            log.info("fold %d: training in %s", k, fold_dir)
            result = train.train_and_evaluate(c, fold_dir)
            done = {"uar": result["uar"], "war": result["war"]}
        else:
            log.info("fold %d: already finished in %s (UAR %.4f WAR %.4f)", k, fold_dir, done["uar"], done["war"])
        per_fold[f"fold{k}"] = {"uar": float(done["uar"]), "war": float(done["war"])}
    return {"folds": per_fold, **summarize(per_fold)}


def summarize(per_fold: dict) -> dict:
    """Mean and std (population, ddof=0) of UAR and WAR over the folds."""
    out = {}
    for metric in ("uar", "war"):
        values = np.array([v[metric] for v in per_fold.values()], np.float64)
        out[f"{metric}_mean"] = float(values.mean())
        out[f"{metric}_std"] = float(values.std())
    return out


def markdown_table(rows: dict[str, dict]) -> str:
    """Rows {setup name: run_folds result} -> a Markdown table, values in %."""
    folds = sorted({f for r in rows.values() for f in r["folds"]}, key=lambda f: int(f[4:]))
    head = "| setup | " + " | ".join(f"{f} UAR / WAR" for f in folds) + " | mean UAR | mean WAR |"
    lines = [head, "|" + "---|" * (len(folds) + 3)]
    for name, r in rows.items():
        cells = [f"{100 * r['folds'][f]['uar']:.2f} / {100 * r['folds'][f]['war']:.2f}" if f in r["folds"] else "-"
                 for f in folds]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {100 * r['uar_mean']:.2f} ± {100 * r['uar_std']:.2f}"
                     + f" | {100 * r['war_mean']:.2f} ± {100 * r['war_std']:.2f} |")
    return "\n".join(lines)


def ablation_chart(rows: dict[str, dict], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names) + 2), 4), dpi=120)
    for offset, metric, colour in ((-0.2, "uar", "#3b6ea8"), (0.2, "war", "#e39b3b")):
        means = [100 * rows[n][f"{metric}_mean"] for n in names]
        stds = [100 * rows[n][f"{metric}_std"] for n in names]
        ax.bar(x + offset, means, 0.4, yerr=stds, label=metric.upper(), color=colour, capsize=3)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("%")
    low = min(100 * min(r["uar_mean"], r["war_mean"]) for r in rows.values())
    ax.set_ylim(max(0, low - 10), 100)
    ax.legend()
    ax.set_title("modalities x fusion (mean over folds, last checkpoint)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def ablation_setups(config, subsets, fusions):
    """{'face+pose/concat': config, ...}: the config restricted to each subset, in each fusion mode."""
    setups = {}
    for subset in subsets:
        names = subset.split("+")
        unknown = [m for m in names if m not in config.modalities]
        if unknown:
            from fer_jax.errors import ConfigError

            raise ConfigError(f"--subsets names {unknown}, which the config does not define; it has "
                              f"{list(config.modalities)} (use a config variant with all of them, e.g. :face+pose).")
        for fusion in fusions:
            c = copy.deepcopy(config)
            with c.unlocked():
                for m in list(c.modalities):
                    if m not in names:
                        del c.modalities[m]
                c.model.fusion = fusion
            setups[f"{subset}/{fusion}"] = c
    return setups


def write_report(workdir: str, rows: dict[str, dict], *, chart: bool) -> dict:
    os.makedirs(workdir, exist_ok=True)
    table = markdown_table(rows)
    note = ("UAR/WAR in %, last checkpoint of each fold (no selection on the test split); "
            "± is the population std over folds.")
    with open(os.path.join(workdir, "cross_validation.md"), "w") as f:
        f.write(table + "\n\n" + note + "\n")
    with open(os.path.join(workdir, "cross_validation.json"), "w") as f:
        json.dump(rows, f, indent=2)
    out = {"table": table, "markdown": os.path.join(workdir, "cross_validation.md"),
           "json": os.path.join(workdir, "cross_validation.json")}
    if chart:
        out["chart"] = ablation_chart(rows, os.path.join(workdir, "ablation.png"))
    return out


def main(argv):
    from absl import app

    from fer_jax import cli

    config, workdir = cli.config_and_workdir(argv)
    folds = [int(f) for f in FLAGS.folds.split(",") if f]
    if not folds or any(f not in range(1, 6) for f in folds):
        raise app.UsageError(f"--folds={FLAGS.folds!r}: expected folds among 1,2,3,4,5")
    if FLAGS.subsets or FLAGS.fusions:
        subsets = (FLAGS.subsets or "+".join(config.modalities)).split(",")
        fusions = (FLAGS.fusions or config.model.get("fusion", "concat")).split(",")
        rows = {name: run_folds(c, os.path.join(workdir, name.replace("/", "_")), folds)
                for name, c in ablation_setups(config, subsets, fusions).items()}
        report = write_report(workdir, rows, chart=True)
    else:
        rows = {"+".join(config.modalities) + "/" + config.model.get("fusion", "concat"):
                run_folds(config, workdir, folds)}
        report = write_report(workdir, rows, chart=False)
    print(report["table"])
    print("wrote " + ", ".join(v for k, v in report.items() if k != "table"))


if __name__ == "__main__":
    from fer_jax import cli

    cli.run(main)
