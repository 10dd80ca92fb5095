"""Every command's --help: each option explained, with its default; one parser class for all of them."""
import argparse
import importlib

import pytest

from runfolder import cli

COMMANDS = [("training", []), ("training", ["import"]), ("quantize", []), ("quantize", ["split"]),
            ("quantize", ["plan"]), ("compile", []), ("compile", ["check"]), ("deploy", []), ("deploy", ["verify"]),
            ("deploy", ["bench"]), ("deploy", ["doctor"]),
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


def _parsers(monkeypatch):
    return {(m, *s): built_parser(m, s, monkeypatch) for m, s in COMMANDS}


def test_every_command_shows_an_example(monkeypatch):
    missing = [" ".join(key) for key, parser in _parsers(monkeypatch).items()
               if f"python -m {key[0]}" not in (parser.description or "") + (parser.epilog or "")]
    assert not missing, f"--help shows no example command: {missing}"


# Options that share a name but mean different things in different commands, each with why.
SAME_NAME_OTHER_MEANING = {
    "--dataset": "what training trains on (the embedded digits); what import and deploy --eval measure on "
                 "(the user's folder; deploy: none means the run's own test split)",
    "--timeout": "seconds for one compile in compile; for one request in deploy chain",
    "--listen": "a gRPC stage server (50051, gRPC's customary port) vs the HTTP API (8000)",
    "--max-in-flight": "deploy k8s passes it on to every serve-stage only when given",
    "--samples": "calibration images in quantize; inputs compared in verify; inputs timed in bench",
}


def test_an_option_has_one_default_wherever_it_appears(monkeypatch):
    seen = {}
    for key, parser in _parsers(monkeypatch).items():
        for action in parser._actions:
            for name in action.option_strings:
                if name.startswith("--") and name not in SAME_NAME_OTHER_MEANING and name != "--help":
                    seen.setdefault(name, {})[" ".join(key)] = action.default
    differing = {name: where for name, where in seen.items() if len({repr(v) for v in where.values()}) > 1}
    assert not differing, f"options whose default depends on the command: {differing}"


def test_the_readme_names_only_options_the_commands_have(monkeypatch):
    """Each `python -m MODULE [SUB] --option ...` in the README: every option it names is one --help lists."""
    import pathlib
    import re
    parsers = _parsers(monkeypatch)
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    checked = 0
    for command in re.findall(r"`(python -m [a-z_]+[^`]*)`", readme):
        words = command.split()
        module, rest = words[2], words[3:]
        key = (module, rest[0]) if rest and (module, rest[0]) in parsers else (module,)
        if key not in parsers:
            continue
        parser = parsers[key]
        for action in parser._actions:     # a command with sub-commands of its own (datasets export)
            if isinstance(action, argparse._SubParsersAction) and rest and rest[0] in action.choices:
                parser = action.choices[rest[0]]
        known = {name for action in parser._actions for name in action.option_strings}
        mine = command.split(" -- ")[0]            # after "--": options of the processes it starts
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-o)\b", mine):
            assert option in known, f"README: `{command}` names {option}, which `{' '.join(key)} --help` lacks"
            checked += 1
    assert checked > 40, f"only {checked} options found in the README's commands"


@pytest.mark.parametrize("argv", [["training", "--epocs", "3"], ["training", "import", "m.keras", "--rn", "r"],
                                  ["quantize", "--run", "r", "--stagez", "3"], ["quantize", "split", "m", "--outt", "d"]],
                         ids=lambda argv: " ".join(argv))
def test_a_mistyped_option_is_refused_before_tensorflow_loads(argv):
    """argparse says it at once: TensorFlow (seconds to import) is loaded only after the options are read."""
    import subprocess
    import sys
    code = ("import sys, importlib; m = importlib.import_module(sys.argv[1] + '.__main__')\n"
            "try:\n    m.main(sys.argv[2:])\nexcept SystemExit as e:\n"
            "    print('exit', e.code, 'tensorflow' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                            check=False)
    assert "unrecognized arguments" in result.stderr or "required" in result.stderr, result.stderr
    assert result.stderr.strip().endswith("exit 2 False"), result.stderr


def test_a_value_that_starts_with_a_minus_is_a_value():
    """``--input-range -1,1`` as the README writes it (argparse alone takes "-1,1" for an unknown option)."""
    parser = cli.ArgumentParser(prog="x")
    parser.add_argument("--input-range")
    parser.add_argument("--scale", type=float)
    parser.add_argument("-o")
    args = parser.parse_args(["--input-range", "-1,1", "--scale", "-0.5", "-o", "-1.5,-2"])
    assert (args.input_range, args.scale, args.o) == ("-1,1", -0.5, "-1.5,-2")
    with pytest.raises(SystemExit):
        parser.parse_args(["--input-range", "-x"])
