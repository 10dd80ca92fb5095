"""The one error type a user is shown: what is wrong and what to do, with the exit status it means.

Every step's own errors (``ManifestError``, ``DatasetError``, ``GraphError``, ...) are ``UserError``s, so
each command's entry point catches this class alone (``runfolder.cli.entry_point``) and exit statuses mean
the same everywhere: 2 an error the message says how to fix, 3 the command cannot run on this machine.
Any other exception is a bug and keeps its traceback.
"""

USAGE = 2          # wrong input, a missing or damaged file, a step run out of order
CANNOT_RUN = 3     # this machine lacks what the command needs (an Edge TPU, a tflite runtime)


class UserError(Exception):
    """A problem the user can fix; ``str()`` says what and how. ``fix``: the command or change that
    fixes it, when it is one thing (shown after the message)."""

    exit_code = USAGE
    label = "error"

    def __init__(self, *args, fix=None):
        super().__init__(*args)
        self.fix = fix

    def __str__(self):
        text = super().__str__()
        return f"{text}; {self.fix}" if self.fix else text


class CannotRunHere(UserError):
    """The command cannot run on this machine (e.g. no Edge TPU to compare with); the message says why."""

    exit_code = CANNOT_RUN
    label = "cannot run"


class OptionError(UserError, ValueError):
    """An option or value given on the command line (or to the API that reads it) is wrong; a ValueError
    too, so code that checks values the usual way keeps working."""
