"""What a training run is asked for, as one value: the CLI builds it, ``train`` reads it, resume restores it.

No TensorFlow here: the command line checks its options before TensorFlow is imported.
"""
import dataclasses

from runfolder.errors import UserError

DEFAULT_EPOCHS = 8


class TrainingError(UserError, ValueError):
    """The run folder or the options do not allow training as asked."""


@dataclasses.dataclass(frozen=True)
class Transfer:
    """How a backbone is built and trained (ignored by the small models)."""
    alpha: float = None               # width multiplier; None: the backbone's default
    weights: str = None               # "imagenet", a weights file, or None (random)
    fine_tune_layers: int = 0         # backbone layers opened after the head is trained (BatchNorm stays frozen)
    fine_tune_epochs: int = 0
    input_size: int = None            # image size asked of the data set (its "size" option)
    fine_tune_from_epoch: int = None  # recorded in the manifest: where fine-tuning began

    def model_options(self):
        return {"alpha": self.alpha, "weights": self.weights}

    def is_plain(self):
        """True when nothing but the input size is set (what a small model accepts)."""
        return self == Transfer(input_size=self.input_size)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run's data, model and schedule.

    ``model`` None picks one for the data. ``exits`` names boundaries that get an early-exit
    head, trained jointly with the main head (loss weight 1) at ``exit_weight`` each.
    ``transfer`` sets a backbone's width, weights and fine-tuning. ``class_weights="balanced"``
    weighs each class's loss by the inverse of its share of the train split. ``augment`` (names
    from ``training.batches.AUGMENTATIONS``) transforms the training batches only. ``epochs``
    None means the default, or, on resume, as many as the run was first asked for.
    """
    dataset: str = "digits"
    dataset_options: dict = dataclasses.field(default_factory=dict)
    model: str = None
    epochs: int = None
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 3
    seed: int = 0
    exits: tuple = ()
    exit_weight: float = 0.3
    transfer: Transfer = Transfer()
    class_weights: str = None
    augment: tuple = ()

    def __post_init__(self):
        if self.transfer is None:   # "no transfer options" said as None
            object.__setattr__(self, "transfer", Transfer())
        object.__setattr__(self, "exits", tuple(self.exits or ()))
        object.__setattr__(self, "augment", tuple(self.augment or ()))

    def check(self):
        """TrainingError for options that cannot work whatever the data; returns self."""
        if self.epochs is not None and self.epochs < 1:
            raise TrainingError(f"--epochs must be at least 1, got {self.epochs}")
        if self.exits and not self.exit_weight > 0:
            raise TrainingError(f"--exit-weight must be above 0, got {self.exit_weight}")
        if self.class_weights not in (None, "balanced"):
            raise TrainingError(f"--class-weights {self.class_weights!r}: the choice is 'balanced' (or leave it out)")
        if self.class_weights and self.exits:
            raise TrainingError("--class-weights does not combine with --exits (Keras weighs classes of one output)")
        return self

    def data_options(self):
        """The data set's options, with the transfer's input size as its ``size``."""
        options = dict(self.dataset_options or {})
        if self.transfer.input_size:
            options["size"] = self.transfer.input_size
        return options

    def resumed(self, manifest):
        """This config as the run in ``manifest`` was first asked for; only ``epochs`` may be asked anew."""
        section, asked = manifest["dataset"], manifest["training"]
        return dataclasses.replace(
            self, dataset=section["name"], dataset_options=section["options"], model=asked["model"],
            seed=section["split_seed"],
            transfer=Transfer(**asked["transfer"]) if asked.get("transfer") else Transfer(),
            exits=tuple(e["boundary"] for e in asked.get("exits", [])),
            exit_weight=asked.get("exit_loss_weight", self.exit_weight),
            augment=tuple(asked.get("augment", self.augment)),
            class_weights=asked.get("class_weights", self.class_weights),
            batch_size=asked.get("batch_size", self.batch_size),
            learning_rate=asked.get("learning_rate", self.learning_rate),
            epochs=asked.get("epochs_asked") if self.epochs is None else self.epochs)

    def epochs_or_default(self):
        return DEFAULT_EPOCHS if self.epochs is None else self.epochs
