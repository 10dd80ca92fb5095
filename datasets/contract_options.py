"""The command-line options of a model's input contract and labels, one definition for every command that
brings a model in (``quantize split``, ``training import``), read into manifest sections the same way."""
from datasets.core import COLOR_ORDERS, CONTRACT_DEFAULTS, RESIZE_METHODS
from datasets.labels import label_record, read_labels
from datasets.preprocess import normalization_from_options


def add_contract_options(parser, range_default):
    """``--labels``, ``--input-range``, ``--mean/--std``, ``--color-order``, ``--resize-method``.

    ``range_default`` says, for the help text, what is taken when no range is given."""
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="class labels: one a line, or 'N label' a line (as Coral's label files)")
    parser.add_argument("--input-range", default=None, metavar="LOW,HIGH",
                        help=f"the values the model was trained on: -1,1 | 0,1 | 0,255 (default: {range_default})")
    parser.add_argument("--mean", type=float, default=None, help="with --std: model input = (pixels - mean) / std")
    parser.add_argument("--std", type=float, default=None, help="with --mean: the divisor of the pixels")
    parser.add_argument("--color-order", choices=COLOR_ORDERS, default=None,
                        help="channel order the model was trained on: RGB, or BGR for Caffe-style models "
                             f"(default: {CONTRACT_DEFAULTS['color_order']})")
    parser.add_argument("--resize-method", choices=RESIZE_METHODS, default=None,
                        help="how images of another size are resized, as in training; Coral's classify_image.py "
                             f"uses lanczos (default: {CONTRACT_DEFAULTS['resize_method']})")


def contract_from_options(args):
    """(input section or {}, labels section or None) from the parsed options; ValueError (or LabelsError, a
    ValueError too) naming the option when they do not hold together or the label file cannot be read."""
    section = {}
    given = normalization_from_options(args.input_range, args.mean, args.std)
    if given:
        (mean, std), source = given
        section.update(normalization={"mean": mean, "std": std}, source=source)
    for key in ("resize_method", "color_order"):
        if getattr(args, key) is not None:
            section[key] = getattr(args, key)
    labels = label_record(args.labels, read_labels(args.labels)) if args.labels else None
    return section, labels
