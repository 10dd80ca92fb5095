"""PNG figures for the run report, drawn with matplotlib when it is installed.

matplotlib is imported lazily: a Raspberry Pi without it still gets a report
with every table (each figure function then returns None and the page says why).
"""
import io

import numpy as np

MISSING = "figures need matplotlib (pip install matplotlib); the tables below hold the same numbers"


def _pyplot():
    """matplotlib.pyplot with the file-only Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def available():
    return _pyplot() is not None


def _png(plt, fig):
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _history_groups(history):
    """{panel title: [metric names]}: the model's loss and accuracy, then the exit heads' (names with 'exit')."""
    groups = {}
    for key in sorted(history):
        kind = "loss" if "loss" in key else "accuracy" if "acc" in key else None
        if kind:
            groups.setdefault(f"exit heads: {kind}" if "exit" in key else kind, []).append(key)
    order = ["loss", "accuracy", "exit heads: loss", "exit heads: accuracy"]
    return {name: groups[name] for name in order if name in groups}


def training_curves(history):
    """Loss and accuracy per epoch (train solid, validation dashed); exit heads in panels of their own."""
    plt = _pyplot()
    groups = _history_groups(history or {})
    if plt is None or not groups:
        return None
    from matplotlib.ticker import MaxNLocator
    columns = min(2, len(groups))
    rows = (len(groups) + 1) // 2
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    for ax, (name, keys) in zip(axes.flat, groups.items()):
        for key in keys:
            values = history[key]
            ax.plot(range(1, len(values) + 1), values, "--s" if key.startswith("val_") else "-o",
                    label=key, markersize=3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    return _png(plt, fig)


def confusion(matrix, class_names, title, column_names=None):
    """A confusion matrix as a heat map with counts in the cells (true class down, predicted across);
    ``column_names`` when the answers have classes of their own (e.g. "other")."""
    plt = _pyplot()
    if plt is None:
        return None
    rows, cols = len(matrix), len(matrix[0]) if len(matrix) else 0
    fig, ax = plt.subplots(figsize=(1.2 + 0.42 * cols, 1.0 + 0.42 * rows))
    ax.imshow(matrix, cmap="Blues")
    column_names = column_names or class_names

    def named(names, size):
        return [str(n) for n in names] if len(names) == size else [str(i) for i in range(size)]
    ax.set_xticks(range(cols), named(column_names, cols), rotation=90 if cols > 12 else 0, fontsize=7)
    ax.set_yticks(range(rows), named(class_names, rows), fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if max(rows, cols) <= 20:
        top = max(max(row) for row in matrix) or 1
        for (i, j), count in _cells(matrix):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                    color="white" if count > top / 2 else "black")
    return _png(plt, fig)


def _cells(matrix):
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                yield (i, j), int(count)


def stage_latency(stage_rows):
    """Grouped bars of per-stage latency, one group per stage, one bar per measurement.

    Args:
      stage_rows: {measurement name: [ms per stage or None]}.
    """
    plt = _pyplot()
    series = {name: values for name, values in stage_rows.items() if any(v is not None for v in values)}
    if plt is None or not series:
        return None
    count = max(len(v) for v in series.values())
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * count + 2), 3.4))
    for k, (name, values) in enumerate(series.items()):
        xs = [i + k * width for i, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=name)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(count)], [f"stage {i}" for i in range(count)])
    ax.set_ylabel("ms")
    ax.set_title("latency per stage")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _png(plt, fig)


def exit_tradeoff(rows, full_model):
    """Left: accuracy against mean latency, one point per threshold (labelled), and the full model.
    Right: the share of samples leaving at each exit, stacked, against the threshold."""
    plt = _pyplot()
    points = [r for r in rows if r.get("accuracy") is not None and r.get("latency_ms_mean") is not None]
    if plt is None or not points:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.plot([r["latency_ms_mean"] for r in points], [100 * r["accuracy"] for r in points], "-o",
              linewidth=0.8, label="early exit, by threshold")
    for r in points:
        left.annotate(f"{r.get('threshold')}", (r["latency_ms_mean"], 100 * r["accuracy"]), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))
    if full_model and full_model.get("accuracy") is not None and full_model.get("latency_ms_mean") is not None:
        left.plot([full_model["latency_ms_mean"]], [100 * full_model["accuracy"]], "r*", markersize=12,
                  label="full model (no exit)")
    left.set_xlabel("mean latency per sample (ms)")
    left.set_ylabel("accuracy (%)")
    left.set_title("accuracy vs latency")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    names = []
    for r in points:
        names += [n for n in (r.get("exit_share") or {}) if n not in names]
    positions = range(len(points))
    shares = [[100 * (r.get("exit_share") or {}).get(n, 0.0) for r in points] for n in names]
    if shares:
        right.stackplot(positions, shares, labels=names, alpha=0.8)
    right.set_xticks(list(positions), [str(r.get("threshold")) for r in points], fontsize=7)
    right.set_xlabel("threshold")
    right.set_ylabel("samples leaving (%)")
    right.set_title("where samples leave")
    right.legend(fontsize=7, loc="lower left")
    return _png(plt, fig)


def sample_grid(images, labels, classes, per_class=8, max_classes=20, tile=56, gap=2):
    """PNG of the first ``per_class`` test images of each class, one row per class, each scaled to about
    ``tile`` pixels (Pillow only, so it is drawn without matplotlib too); None when there are no images."""
    from PIL import Image
    if images is None or len(images) == 0:
        return None
    labels = np.asarray(labels)
    classes = classes or int(labels.max()) + 1
    rows = [np.flatnonzero(labels == c)[:per_class] for c in range(min(classes, max_classes))]
    if not any(len(r) for r in rows) or images.ndim != 4:
        return None
    height, width, channels = images.shape[1:4]
    factor = tile / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resample = Image.NEAREST if factor >= 1 else Image.BILINEAR
    mode, white = ("L", 255) if channels == 1 else ("RGB", (255, 255, 255))
    grid = Image.new(mode, (per_class * (size[0] + gap), len(rows) * (size[1] + gap)), white)
    for r, indices in enumerate(rows):
        for c, i in enumerate(indices):
            pixels = images[i][:, :, 0] if channels == 1 else images[i]
            grid.paste(Image.fromarray(pixels).resize(size, resample), (c * (size[0] + gap), r * (size[1] + gap)))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return buf.getvalue()
