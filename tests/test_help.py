"""Every command's --help: each option explained, with its default; one parser class for all of them."""
import argparse
import importlib

import pytest

from runfolder import cli

COMMANDS = [("training", []), ("training", ["import"]), ("quantize", []), ("quantize", ["split"]),
            ("quantize", ["plan"]), ("compile", []), ("compile", ["check"]), ("deploy", []), ("deploy", ["verify"]),
            ("deploy", ["bench"]),
            ("deploy", ["summary"]), ("deploy", ["exits"]), ("deploy", ["report"]), ("deploy", ["serve-stage"]),
            ("deploy", ["chain"]), ("deploy", ["launch"]), ("deploy", ["serve-api"]), ("deploy", ["worker"]),
            ("deploy", ["k8s"]), ("datasets", [])]
FLAGS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction, argparse._HelpAction)


class _Built(Exception):
    pass


def built_parser(module, sub, monkeypatch):
    """The parser a command builds, caught as it starts parsing."""
    found = []

    def catch(self, args=None, namespace=None):
        found.append(self)
        raise _Built
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    try:
        importlib.import_module(f"{module}.__main__").main([*sub, "--x"])
    except _Built:
        pass
    monkeypatch.undo()
    assert found, f"{module} {sub}: no parser built"
    return found[-1]


@pytest.mark.parametrize("module,sub", COMMANDS, ids=[" ".join([m, *s]) for m, s in COMMANDS])
def test_every_option_is_explained_with_its_default(module, sub, monkeypatch):
    parser = built_parser(module, sub, monkeypatch)
    assert isinstance(parser, cli.ArgumentParser) and parser.formatter_class is cli.HelpFormatter
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = formatter._get_help_string(action)
        name = (action.option_strings or [action.dest])[-1]
        assert text, f"{module} {' '.join(sub)} {name} has no help text"
        meaningful = action.option_strings and not isinstance(action, FLAGS) and action.default not in (None, False, [])
        assert not meaningful or "default" in text, f"{name}: help does not say its default {action.default!r}"
