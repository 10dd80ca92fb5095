"""Training curves as a PNG, for people who would rather look than read."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_history(history, path, title="", fine_tune_from=None):
    """Loss and accuracy per epoch, train vs validation, side by side.

    Args:
      history: {"loss": [...], "val_loss": [...], "accuracy": [...], "val_accuracy": [...]}.
      path: PNG file to write.
      fine_tune_from: the first fine-tuning epoch (1-based) of a transfer-learning run, marked by a line.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = range(1, len(history.get("loss", [])) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            values = history.get(prefix + key)
            if values:
                ax.plot(list(epochs)[: len(values)], values, style, label=(prefix or "train_") + key)
        if fine_tune_from:
            ax.axvline(fine_tune_from - 0.5, color="grey", linestyle=":", label="fine-tuning from here")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
