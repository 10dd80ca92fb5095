"""One error type: every step's errors are UserErrors, every entry point shows them as one line with the
same exit statuses, and anything else (a bug) keeps its traceback."""
import json

import pytest

from runfolder import cli
from runfolder.errors import CannotRunHere, UserError
from tests.conftest import run_cli


def test_every_steps_errors_are_user_errors():
    import compile.compiler
    import compile.preflight
    import datasets
    import datasets.labels
    import deploy.cli.actions
    import deploy.core.chain
    import deploy.core.runtime
    import deploy.core.stages
    import quantize.contract
    import runfolder
    import tflitegraph.graph
    errors = [runfolder.ManifestError, runfolder.StepOrderError, datasets.DatasetError, datasets.ImageError,
              datasets.labels.LabelsError, tflitegraph.graph.GraphError, quantize.contract.ContractError,
              compile.compiler.CompilerError, compile.preflight.CheckError, deploy.core.stages.StageError,
              deploy.core.chain.ChainError]
    assert all(issubclass(e, UserError) and e.exit_code == 2 for e in errors), \
        [e.__name__ for e in errors if not issubclass(e, UserError)]
    assert issubclass(deploy.cli.actions.CannotRun, CannotRunHere) and deploy.core.runtime.RuntimeMissing.exit_code == 3


def test_the_entry_point_shows_a_user_error_in_one_line_and_a_bug_with_its_traceback(capsys):
    @cli.entry_point
    def fails(argv):
        raise UserError("the thing is wrong", fix="do this instead")

    @cli.entry_point
    def cannot(argv):
        raise CannotRunHere("no Edge TPU here")

    @cli.entry_point
    def bug(argv):
        return 1 / 0

    assert fails([]) == 2 and cannot([]) == 3
    assert capsys.readouterr().err.splitlines() == ["error: the thing is wrong; do this instead",
                                                   "cannot run: no Edge TPU here"]
    with pytest.raises(ZeroDivisionError):
        bug([])


def test_a_run_whose_input_spec_lacks_channels_is_one_error_line(coral_data, tmp_path):
    """Before one error type, deploy --image gave a traceback and exit 1 here (DatasetError was not in its list)."""
    run = tmp_path / "r"
    assert run_cli("quantize", "split", coral_data / "mobilenet_v1_0.25_128_quant.tflite", "--out", run).returncode == 0
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["dataset"] = {"input_spec": {"height": 128, "width": 128}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("deploy", "--run", run, "--image", coral_data / "cat.bmp")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "channels" in result.stderr and result.stderr.count("error:") == 1, result.stderr


def test_a_step_out_of_order_exits_2_in_every_step(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (["quantize", "--run", empty], ["compile", "--run", empty], ["deploy", "--run", empty, "--eval"],
                 ["compile", "check", empty]):
        result = run_cli(*argv)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (argv, result.stderr)
