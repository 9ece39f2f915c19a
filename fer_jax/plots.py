"""Figures: confusion matrix, training curves, the ablation chart and a video's emotion timeline (PNG).

matplotlib is imported only when a figure is drawn (it is slow to import and no CLI needs it
otherwise).
"""

from __future__ import annotations

import io
import os
import re

import numpy as np

from fer_jax import paths

# One colour per class, in the dataset's class order (DFEW's seven first; more classes continue the cycle).
EMOTION_COLOURS = ("#f2b701", "#3969ac", "#a5aa99", "#e73f74", "#f97b22", "#4b9b3c", "#7f3c8d",
                   "#11a579", "#80ba5a", "#cf1c90", "#008695", "#e68310", "#b95f53", "#6c7a89")


def class_colours(num_classes: int) -> list[str]:
    """A colour per class: EMOTION_COLOURS repeated for a dataset with more classes than colours."""
    return [EMOTION_COLOURS[i % len(EMOTION_COLOURS)] for i in range(num_classes)]


def _pyplot():
    import matplotlib  # noqa: PLC0415  (lazy: an optional heavy import, only when drawing)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  (lazy, as above)

    return plt


def _save(fig, path: str, title: str = "") -> str:
    """Writes `fig` (with an optional overall title, laid out tight) to `path`, closes it, returns the path."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return write(fig, path)


def write(fig, path: str) -> str:
    """Every figure is written (and closed) here, so a test can see what a figure says before it is saved."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=os.path.splitext(paths.basename(path))[1][1:] or "png")
    _pyplot().close(fig)
    paths.write_bytes(path, buffer.getvalue())
    return path


def confusion_matrix_png(confusion, class_names, path: str, *, title: str = "") -> str:
    """Writes a row-normalised confusion matrix (recall on the diagonal, counts in each cell) to `path`."""
    plt = _pyplot()
    c = np.asarray(confusion, np.float64)
    rows = c.sum(axis=1, keepdims=True)
    norm = np.divide(c, rows, out=np.zeros_like(c), where=rows > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * n, 0.8 + 0.8 * n), dpi=120)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if c[i, j]:
                colour = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, f"{norm[i, j]:.2f}\n{int(c[i, j])}", ha="center", va="center", fontsize=7, color=colour)
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="recall (row-normalised)")
    fig.tight_layout()
    return write(fig, path)


def training_curves_png(records: list[dict], path: str, *, title: str = "", chance: float | None = None) -> str:
    """Loss, learning rate and (when evaluated) test UAR/WAR over steps, from a run's metrics.jsonl records.

    chance: the chance level of UAR in % (100 / number of classes), drawn when given.
    """
    plt = _pyplot()
    train = [r for r in records if r.get("split") in ("train", "pretrain") and "loss" in r]
    test = [r for r in records if r.get("split") == "test" and "uar" in r]
    panels = 3 if test else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.2), dpi=110)
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["loss"] for r in train], color="#3b6ea8", lw=1.2)
    axes[0].set_title("training loss" if not train or train[0]["split"] == "train" else "reconstruction loss",
                      fontsize=9)
    axes[1].plot(steps, [r.get("lr", np.nan) for r in train], color="#555555", lw=1.2)
    axes[1].set_title("learning rate", fontsize=9)
    if test:
        s = [r["step"] for r in test]
        axes[2].plot(s, [100 * r["uar"] for r in test], "o-", color="#3b6ea8", label="UAR")
        axes[2].plot(s, [100 * r["war"] for r in test], "s-", color="#e39b3b", label="WAR")
        axes[2].set_ylim(0, 100)
        if chance is not None:
            axes[2].axhline(chance, color="0.6", ls="--", lw=0.8, label="chance UAR")
        axes[2].set_title("test split (last step is the reported one)", fontsize=9)
        axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _save(fig, path, title)


def setups_curves_png(runs: dict[str, list[dict]], path: str, *, title: str = "", chance: float | None = None) -> str:
    """Training loss and test UAR over steps of several runs (e.g. each setup of an ablation), one line each."""
    plt = _pyplot()
    fig, (loss_ax, uar_ax) = plt.subplots(1, 2, figsize=(10, 3.4), dpi=110)
    for name, records in runs.items():
        train = [r for r in records if r.get("split") == "train" and "loss" in r]
        test = [r for r in records if r.get("split") == "test" and "uar" in r]
        line, = loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1.2, label=name)
        uar_ax.plot([r["step"] for r in test], [100 * r["uar"] for r in test], "o-", color=line.get_color(),
                    label=name)
    loss_ax.set_title("training loss", fontsize=9)
    uar_ax.set_title("test UAR (%; the last step is the reported one)", fontsize=9)
    uar_ax.set_ylim(0, 100)
    if chance is not None:
        uar_ax.axhline(chance, color="0.6", ls="--", lw=0.8, label="chance")
    for ax in (loss_ax, uar_ax):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    uar_ax.legend(fontsize=7)
    return _save(fig, path, title)


def ablation_png(rows: dict[str, dict], path: str, *, chance: float = 100 / 7) -> str:
    """Bars of mean UAR/WAR per setup (in the given order), std error bars when there are several folds.

    The axis starts at 0 and the chance level of UAR (100 / number of classes, %) is drawn, so bar heights
    compare honestly. The legend sits right of the plot, where no bar can hide under it.
    """
    plt = _pyplot()
    names = list(rows)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names) + 2) + 1.6, 4), dpi=120)
    for offset, metric, colour in ((-0.2, "uar", "#3b6ea8"), (0.2, "war", "#e39b3b")):
        means = [100 * rows[n][f"{metric}_mean"] for n in names]
        several = [len(rows[n].get("folds", {})) > 1 for n in names]
        stds = [100 * rows[n][f"{metric}_std"] if many else 0.0 for n, many in zip(names, several)]
        ax.bar(x + offset, means, 0.4, yerr=stds if any(several) else None, label=metric.upper(), color=colour,
               capsize=3)
    ax.axhline(chance, color="0.4", ls="--", lw=1, label=f"chance UAR ({chance:.1f}%)")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    folds = list(dict.fromkeys(f for r in rows.values() for f in r.get("folds", {})))
    ax.set_title(f"modalities x fusion ({', '.join(folds)}; last checkpoint)", fontsize=9)
    fig.tight_layout()
    return write(fig, path)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[(start, end_exclusive)] of the True runs of a bool[N]."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def timeline_png(result: dict, path: str) -> str:
    """A stacked-area timeline of the window probabilities, the dominant emotion above it, no-face spans shaded."""
    plt = _pyplot()
    from matplotlib.patches import Patch  # noqa: PLC0415  (lazy: see _pyplot)

    fps, n = float(result["fps"]), int(result["num_frames"])
    duration = max(n / fps, 1e-6)
    windows = result["windows"]
    centre = np.array([(w["start_s"] + w["end_s"]) / 2.0 for w in windows])
    face = np.array([not w["no_face"] for w in windows], bool)
    names = list(result["class_names"])
    colours = class_colours(len(names))
    probs = np.array([[w["probabilities"][c] for c in names] if w["probabilities"] else [0.0] * len(names)
                      for w in windows], np.float64).reshape(-1, len(names))

    fig, (band, ax) = plt.subplots(2, 1, figsize=(11, 4.2), dpi=110, sharex=True,
                                   gridspec_kw={"height_ratios": [1, 5], "hspace": 0.06})
    # Window w stands for the time nearer its centre than any other's; a run of face windows is
    # drawn from its first cell's start to its last cell's end, through the window centres.
    edges = np.concatenate([[0.0], (centre[1:] + centre[:-1]) / 2.0, [duration]])
    lo = np.maximum(edges[:-1], [w["start_s"] for w in windows])
    hi = np.minimum(edges[1:], [w["end_s"] for w in windows])
    for a, b in _runs(face):
        x = np.concatenate([[lo[a]], centre[a:b], [hi[b - 1]]])
        y = np.concatenate([probs[a:a + 1], probs[a:b], probs[b - 1:b]]).T
        ax.stackplot(x, y, colors=colours, alpha=0.9, linewidth=0)
    # No-face frames, shaded on both axes.
    no_face = np.array([f["status"] == "none" for f in result["frames"]], bool)
    for a, b in _runs(no_face):
        for axis in (ax, band):
            axis.axvspan(a / fps, b / fps, facecolor="0.82", edgecolor="0.55", hatch="//", linewidth=0, zorder=0)
        if (b - a) / fps > 0.06 * duration:
            ax.text((a + b) / 2 / fps, 0.5, "no face", ha="center", va="center", fontsize=9, color="0.3")
    # The dominant emotion: coloured band with labels on runs long enough to read.
    dominant = [w["dominant"] for w in windows]
    w = 0
    while w < len(windows):
        v = w
        while v + 1 < len(windows) and dominant[v + 1] == dominant[w]:
            v += 1
        if dominant[w] is not None:
            start, end = lo[w], hi[v]
            band.axvspan(start, end, facecolor=colours[names.index(dominant[w])], edgecolor="white",
                         linewidth=0.6)
            if end - start > 0.045 * duration:
                band.text((start + end) / 2, 0.5, dominant[w], ha="center", va="center", fontsize=8.5,
                          color="black" if dominant[w] in ("happy", "neutral", "surprise") else "white")
        w = v + 1
    band.set_yticks([])
    band.set_ylabel("dominant", rotation=0, ha="right", va="center", fontsize=8)
    title = paths.basename(result["video"])
    model = result.get("model") or {}
    what = (f"run {paths.basename(model['workdir'])} step {model['step']}" if model.get("kind") == "run"
            else model.get("kind", ""))
    band.set_title(f"{title}: {n} frames at {fps:g} fps, {what}, windows of {result['settings']['window']} "
                   f"frames every {result['settings']['stride']}", fontsize=9)
    ax.set_xlim(0, duration)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    handles = [Patch(facecolor=c, label=name) for c, name in reversed(list(zip(colours, names)))]  # as stacked
    handles.append(Patch(facecolor="0.82", edgecolor="0.55", hatch="//", label="no face"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    if result.get("error"):  # its first clause, without the path already in the title
        reason = re.split(r" \(|; ", result["error"].removeprefix(result["video"] + ": ").split(": ", 1)[-1])[0]
        ax.text(0.5, 0.9, reason, transform=ax.transAxes, ha="center", va="top", fontsize=9, color="darkred",
                bbox={"facecolor": "white", "edgecolor": "darkred", "boxstyle": "round,pad=0.3"})
    fig.subplots_adjust(left=0.07, right=0.87, top=0.9, bottom=0.13)
    return write(fig, path)


