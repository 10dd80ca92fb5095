"""The sections of the run report: data set, training, accuracy, confusion matrices (HTML strings).

Each function takes the gathered data (``deploy.report.data.gather``) and
returns the section's HTML; a missing part becomes a note naming the command
that writes it. Stage, latency and early-exit sections live in
``deploy.report.stages``.
"""
from datasets.labels import labels_of
from deploy.report import plots as report_plots
from deploy.report.data import agreement, command
from deploy.report.html import Raw, esc, image, note, pairs, paragraph, pct, table


def figure(png, alt):
    """The inlined figure, or the note that matplotlib is missing."""
    if png:
        return image(png, alt)
    return note(report_plots.MISSING) if not report_plots.available() else ""


def dataset(data):
    manifest, run = data["manifest"], data["run_dir"]
    section = manifest.get("dataset")
    if not section:
        return note(f"no data set recorded; `{command('training', run)}` records it")
    counts = section.get("counts") or {}
    spec = section.get("input_spec") or {}
    names = section.get("class_names") or []
    options = ", ".join(f"{k}={v}" for k, v in (section.get("options") or {}).items()) or "defaults"
    rows = [("name", section.get("name")), ("options", options), ("split seed", section.get("split_seed")),
            ("input", f"{spec.get('height')}x{spec.get('width')}x{spec.get('channels')}" if spec else "-"),
            (f"classes ({len(names)})", ", ".join(map(str, names)) or "-")]
    parts = [pairs(rows)]
    if counts:
        total = sum(v for v in counts.values() if isinstance(v, int)) or 1
        parts.append(table(["split", "samples", "share"],
                           [(name, count, pct(count / total)) for name, count in counts.items()]))
    if data.get("test_split") is not None:
        images, labels = data["test_split"]
        png = report_plots.sample_grid(images, labels, len(names))
        if png:
            parts.append(paragraph("test split samples, one row per class (" + ", ".join(map(str, names[:20]))
                                   + ("..." if len(names) > 20 else "") + "):", "small"))
            parts.append(image(png, "test split samples, one row per class"))
    return "\n".join(parts)


def training(data):
    manifest, history = data["manifest"], data["history"]
    section = manifest.get("training") or {}
    parts = []
    if section:
        parts.append(pairs([
            ("model", section.get("model")), ("status", section.get("status")),
            ("epochs", f"{section.get('epochs_run')} of {section.get('epochs_asked')}"),
            ("batch size", section.get("batch_size")), ("learning rate", section.get("learning_rate")),
            ("framework", f"{section.get('keras_flavour', '-')} (TensorFlow {section.get('tensorflow', '-')})"),
            ("stage boundaries", ", ".join(section.get("boundaries") or []) or "-"),
            ("exit heads", ", ".join(str(e.get("boundary")) for e in section.get("exits") or []) or "none")]))
    if history is None:
        parts.append(note(data["history_note"]))
        return "\n".join(parts)
    parts.append(figure(report_plots.training_curves(history), "training curves: loss and accuracy per epoch"))
    parts.append(_history_table(history, "history-table"))
    parts.append(_qat_history(manifest))
    return "\n".join(parts)


def _history_table(history, table_id):
    names = sorted(history)
    epochs = max(len(v) for v in history.values())
    rows = [[epoch + 1] + [history[n][epoch] if epoch < len(history[n]) else None for n in names]
            for epoch in range(epochs)]
    return table(["epoch"] + names, rows, table_id=table_id)


def _qat_history(manifest):
    """The quantization-aware fine-tuning's curves, when quantize ran it."""
    qat = (manifest.get("quantization") or {}).get("qat")
    history = qat.get("history") if isinstance(qat, dict) else None
    metrics = {k: v for k, v in (history or {}).items() if isinstance(v, list) and v}
    if not metrics:
        return ""
    kept = f"; kept epoch {history['best_epoch']} (lowest val_loss)" if history.get("best_epoch") else ""
    return "\n".join([
        '<h3 id="qat-training">Quantization-aware fine-tuning</h3>',
        paragraph(f"{qat.get('epochs', len(next(iter(metrics.values()))))} epoch(s), learning rate "
                  f"{qat.get('learning_rate', '-')}{kept}; why: {qat.get('why', '-')}"),
        figure(report_plots.training_curves(metrics), "quantization-aware fine-tuning curves"),
        _history_table(metrics, "qat-history-table")])


def _accuracy_rows(accuracy):
    order = ["float", "ptq", "qat", "int8", "chain"]
    described = {"float": "Keras float model", "ptq": "post-training quantization (int8)",
                 "qat": "quantization-aware training (int8)", "int8": "chosen int8 model, unsplit",
                 "chain": "stage chain (deploy --eval)"}
    rows = []
    for name in order + [k for k in accuracy if k not in order and k != "exits"]:
        value = accuracy.get(name)
        if isinstance(value, (int, float)):
            rows.append((name, described.get(name, ""), pct(value)))
        elif name in order:
            rows.append((name, described[name], "not measured"))
    exits = accuracy.get("exits")
    if isinstance(exits, dict):
        for boundary, value in exits.items():
            shown = pct(value) if isinstance(value, (int, float)) else esc(value)
            rows.append((f"exit {boundary}", "exit head at this boundary", shown))
    return rows


def accuracy(data):
    manifest, run = data["manifest"], data["run_dir"]
    values = manifest.get("accuracy") or {}
    parts = [table(["model", "what", "test accuracy"], _accuracy_rows(values))]
    missing = []
    if values.get("float") is None:
        missing.append(f"float: `{command('training', run)}`")
    if values.get("int8") is None:
        missing.append(f"int8: `{command('quantize', run)}`")
    if values.get("chain") is None:
        missing.append(f"chain: `{command('eval', run)}`")
    if missing:
        parts.append(note("not measured yet - " + "; ".join(missing)))
    quantization = manifest.get("quantization") or {}
    if quantization:
        chosen = quantization.get("chosen", "-") + (f" ({quantization['reason']})" if quantization.get("reason") else "")
        rows = [("method", quantization.get("method")), ("chosen", chosen),
                ("input/output type", quantization.get("io_type")),
                ("representative samples", quantization.get("representative_samples")),
                ("drop float -> int8 (points)", _points(quantization.get("accuracy_drop_points"))),
                ("warning threshold (points)", _points(quantization.get("threshold_points")))]
        for name in ("ptq", "qat"):
            entry = quantization.get(name)
            if isinstance(entry, dict):
                shown = f"accuracy {pct(entry.get('accuracy'))}, drop {_points(entry.get('drop_points'))} points"
                if entry.get("val_accuracy") is not None:
                    shown += f", validation accuracy {pct(entry['val_accuracy'])}"
                rows.append((name, shown))
        parts.append(pairs(rows))
    verify = (manifest.get("deploy") or {}).get("verify")
    if verify:
        parts.append(paragraph(
            f"chain vs unsplit int8 model: {'bit-exact' if verify.get('bit_exact') else 'MISMATCH'} "
            f"({verify.get('mismatching_outputs')} mismatching outputs of {verify.get('outputs_compared')}, "
            f"top-1 agreement {pct(verify.get('top1_agreement'))})"))
    else:
        parts.append(note(f"chain not verified against the unsplit model; `{command('verify', run)}`"))
    return "\n".join(parts)


def _points(value):
    return "-" if value is None else f"{value:.2f}"


def own_data(data):
    """The run measured on a labelled data set of the user's (``deploy --eval --dataset``), or None."""
    section = (data["manifest"].get("deploy") or {}).get("eval_data")
    if not section:
        return note(f"not measured; `python -m deploy --eval --run {data['run_dir']} --dataset folder -o path=DIR` "
                    "measures the run on your own labelled images (one folder per class, named as its label)")
    confusion = section["confusion"]
    matrix, classes = confusion["matrix"], confusion["classes"]
    parts = [paragraph(f"{section['dataset']} ({', '.join(f'{k}={v}' for k, v in section['options'].items())}): "
                       f"{section['samples']} images, classes {section['matched']}; "
                       f"accuracy {pct(section['accuracy'])}."
                       " Rows: true class; columns: the model's answer (\"other\": a class not in the data set).")]
    parts.append(table(["class", "images", "accuracy"],
                       [(c["name"], c["samples"], pct(c["accuracy"])) for c in section["per_class"]],
                       table_id="own-data-per-class"))
    png = report_plots.confusion(matrix, classes[:-1], f"chain on {section['dataset']}", column_names=classes)
    if png:
        parts.append(Raw(image(png, "confusion matrix on your data")))
    parts.append(table(["true \\ predicted"] + classes,
                       [[Raw(f"<b>{esc(name)}</b>")] + list(row) for name, row in zip(classes, matrix)],
                       table_id="own-data-confusion"))
    return "\n".join(parts)


def confusion(data):
    matrices, notes = data["confusion"], data["confusion_notes"]
    names = labels_of(data["manifest"]) or []
    parts = [note(text) for text in notes]
    if not matrices:
        parts.append(note("no predictions to compare: nothing to draw"))
        return "\n".join(parts)
    order = [n for n in ("float", "ptq", "qat", "int8", "chain") if n in matrices]
    rows = []
    for name in order:
        matrix = matrices[name]
        total = int(matrix.sum())
        rows.append((name, total, pct(matrix.trace() / total if total else None)))
    parts.append(paragraph("Rows: true class; columns: predicted class. Measured on the held-out test split."))
    parts.extend(paragraph(text, "small") for text in data.get("confusion_info", []))
    parts.append(table(["predictions", "samples", "accuracy"], rows, table_id="confusion-accuracy"))
    agreeing = agreement(data["predictions"])
    if agreeing:
        parts.append(table(["model", "compared with", "samples", "same prediction"],
                           [(a, b, n, pct(share)) for a, b, n, share in agreeing], table_id="agreement"))
    figures = [report_plots.confusion(matrices[name], names, f"{name} ({rows[k][2]})")
               for k, name in enumerate(order)]
    if any(figures):
        parts.append('<div style="display:flex;flex-wrap:wrap;gap:1em">' +
                     "".join(Raw(f"<div>{image(png, f'confusion matrix {name}')}</div>")
                             for name, png in zip(order, figures) if png) + "</div>")
    else:
        parts.append(figure(None, ""))
    tables = "\n".join(paragraph(f"{name}:", "small") + _matrix_table(matrices[name], names, f"confusion-{name}")
                       for name in order)
    # With figures the count tables are folded away; without matplotlib they are the content.
    parts.append(f"<details{'' if any(figures) else ' open'}><summary>counts</summary>{tables}</details>")
    return "\n".join(parts)


def _matrix_table(matrix, names, table_id):
    labels = [str(n) for n in names] if len(names) == len(matrix) else [str(i) for i in range(len(matrix))]
    rows = [[Raw(f"<b>{esc(labels[i])}</b>")] + [int(v) for v in row] for i, row in enumerate(matrix)]
    return table(["true \\ predicted"] + labels, rows, table_id=table_id)
