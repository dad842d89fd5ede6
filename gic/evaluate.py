"""Test metrics and learning curves of a trained model.

    metrics = evaluate(model, data.test, batch_size=32)   # test_accuracy, test_auc, confusion matrix
    plot_curves(history, "curves.png")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gic.files import atomic_path


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties counted as half."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def predict_proba(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """P(class 1), float64 (N,), for uint8 images (N, S, S, 3), predicted in batches of `batch_size`."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return np.asarray(model.predict(ds, verbose=0), dtype=np.float64).ravel()


def evaluate(model, split, batch_size: int = 32) -> dict[str, Any]:
    """Metrics of `model` (images -> P(class 1)) on `split` (images (N, S, S, 3) uint8, labels (N,) 0/1),
    class 1 predicted at P >= 0.5.

    Returns:
        {test_accuracy (0..1), test_loss (mean binary cross-entropy, nats), test_auc (NaN when the split
        holds one class), confusion_matrix (2 x 2 counts; rows: true class, columns: predicted),
        test_images (N)}.
    """
    probs = predict_proba(model, split.images, batch_size)
    labels = np.asarray(split.labels).astype(int).ravel()
    pred = (probs >= 0.5).astype(int)
    eps = 1e-7
    p = np.clip(probs, eps, 1 - eps)
    loss = float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    cm = np.zeros((2, 2), dtype=int)
    np.add.at(cm, (labels, pred), 1)
    return {"test_accuracy": float((pred == labels).mean()), "test_loss": loss, "test_auc": roc_auc(labels, probs),
            "confusion_matrix": cm.tolist(), "test_images": int(len(labels))}


def plot_curves(history: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Accuracy and loss over both phases, train and validation, with the phase boundary marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("accuracy", "loss")):
        ax.plot(epochs, [h[key] for h in history], "o-", ms=3, label=f"train {key}")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", ms=3, label=f"validation {key}")
        boundary = [h["epoch"] for h in history if h["phase"] == 2]
        if boundary and boundary[0] > epochs[0]:
            ax.axvline(boundary[0] - 0.5, color="grey", ls="--", lw=1)
            ax.text(boundary[0] - 0.5, ax.get_ylim()[1], " fine-tuning", va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch (both phases)")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
