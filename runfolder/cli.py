"""The command lines' parser: every option's help says its default, descriptions keep their layout.

All steps build their parsers with ``ArgumentParser`` from here, so ``--help`` reads the same
everywhere (tested in tests/test_help.py).
"""
import argparse
import functools
import re
import sys

from runfolder.errors import UserError

_NO_DEFAULT = (None, False, [], (), argparse.SUPPRESS)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Adds "(default: X)" to an option's help unless it says its default already or has none worth saying."""

    def _get_help_string(self, action):
        text = action.help or ""
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                   argparse.BooleanOptionalAction, argparse._CountAction))
        if not action.option_strings or flag or "default" in text or action.default in _NO_DEFAULT:
            return text
        return f"{text} (default: {action.default})".strip()


# What argparse takes for a value, not an option, when it starts with "-": numbers, and number lists such
# as ``--input-range -1,1`` (argparse's own pattern has only single numbers, so it would refuse that).
_NEGATIVE_VALUES = re.compile(r"^-\d*\.?\d+(,-?\d*\.?\d+)*$")


class ArgumentParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        if kwargs.get("formatter_class") in (None, argparse.RawDescriptionHelpFormatter, argparse.HelpFormatter):
            kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUES


def entry_point(main):
    """Wraps a command's ``main(argv)``: a ``UserError`` becomes one line on stderr ("error: ..." or
    "cannot run: ...") and its exit status; anything else propagates with its traceback (a bug must show)."""
    @functools.wraps(main)
    def guarded(argv=None):
        try:
            return main(argv)
        except UserError as exc:
            print(f"{exc.label}: {exc}", file=sys.stderr)
            return exc.exit_code
    return guarded
