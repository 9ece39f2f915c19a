"""Figures for reports: the confusion matrix (row-normalised, with counts)."""

from __future__ import annotations

import numpy as np


def confusion_matrix_png(confusion, class_names, path: str, *, title: str = "") -> str:
    """Writes a row-normalised confusion matrix (recall on the diagonal, counts in each cell) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.savefig(path)
    plt.close(fig)
    return path
