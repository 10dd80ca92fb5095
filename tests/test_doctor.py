"""deploy.cli.doctor: verdicts from plain-data environments, and gathering facts from fake file trees."""
import pytest

from deploy.cli import doctor
from deploy.cli.doctor import BAD, INFO, WARN, Environment, Library, diagnose
from deploy.core.edgetpu import EdgeTpu
from tests.conftest import run_cli

GOOGLE = Library("/usr/lib/x86_64-linux-gnu/libedgetpu.so.1.0", "COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted",
                 "libedgetpu1-std", "16.0", "Coral <coral-support@google.com>")
COMMUNITY = Library("/usr/lib/aarch64-linux-gnu/libedgetpu.so.1.0", None, "libedgetpu1-std", "16.0tf2.17.1-1",
                    "Nicola Ferralis <feranick@hotmail.com>")
USB = EdgeTpu("usb", "/sys/bus/usb/devices/2-1")


def env(**fields):
    base = {"python": "3.11.9", "machine": "aarch64", "runtime": "tflite_runtime", "runtime_version": "2.14.0",
            "numpy": "1.26.4", "libraries": [], "tpus": []}
    base.update(fields)
    return Environment(**base)


def bad(verdicts):
    return [v for v in verdicts if v.level == BAD]


def levels(verdicts, word):
    return [v.level for v in verdicts if word in v.message]


@pytest.mark.parametrize("runtime, version", [("tflite_runtime", "2.12.0"), ("tflite_runtime", "2.14.0"),
                                              ("ai_edge_litert", "1.2.0")])
def test_google_libedgetpu_16_with_a_new_runtime_is_bad(runtime, version):
    verdicts = diagnose(env(runtime=runtime, runtime_version=version, libraries=[GOOGLE], tpus=[USB]))
    (verdict,) = bad(verdicts)
    assert "Google's libedgetpu 16.0 crashes" in verdict.message and version in verdict.message
    assert "tflite-runtime<2.12" in verdict.fix and "feranick/libedgetpu" in verdict.fix
    assert verdicts[0] is verdict                              # worst first


def test_google_libedgetpu_16_with_tflite_runtime_2_11_is_fine():
    verdicts = diagnose(env(runtime_version="2.11.0", libraries=[GOOGLE], tpus=[USB]))
    assert bad(verdicts) == []
    assert any("Google's build 16.0" in v.message for v in verdicts)


def test_community_build_must_match_the_runtime_version():
    verdicts = diagnose(env(runtime_version="2.14.0", libraries=[COMMUNITY], tpus=[USB]))
    (verdict,) = bad(verdicts)
    assert "built for TensorFlow 2.17.1" in verdict.message and "tflite-runtime 2.14.0" in verdict.message
    assert "pip install tflite-runtime==2.17.1" in verdict.fix
    assert bad(diagnose(env(runtime_version="2.17.1", libraries=[COMMUNITY], tpus=[USB]))) == []
    with_litert = diagnose(env(runtime="ai_edge_litert", runtime_version="1.2.0", libraries=[COMMUNITY]))
    assert levels(with_litert, "built for TensorFlow 2.17.1") == [WARN]


def test_a_library_the_loader_refuses_is_bad():
    broken = Library(COMMUNITY.path, load_error="libusb-1.0.so.0: cannot open shared object file")
    (verdict,) = bad(diagnose(env(libraries=[broken], tpus=[USB])))
    assert "cannot be loaded: libusb-1.0.so.0" in verdict.message and "libusb-1.0-0" in verdict.fix


def test_build_kind_reads_package_versions():
    assert doctor.build_kind(GOOGLE) == ("google", None)
    assert doctor.build_kind(COMMUNITY) == ("community", "2.17.1")
    assert doctor.build_kind(Library("x", package_version="16.0pp3")) == ("community", "2.10.1")
    assert doctor.build_kind(Library("/usr/local/lib/libedgetpu.so.1")) == ("unknown", None)


def test_pycoral_verdicts():
    real_on_311 = diagnose(env(pycoral="real", pycoral_version="2.0.0"))
    assert levels(real_on_311, "pycoral 2.0.0 on Python 3.11.9") == [WARN]
    on_39 = diagnose(env(python="3.9.18", pycoral="real", pycoral_version="2.0.0"))
    assert not [v for v in on_39 if "pycoral" in v.message]
    unrelated = diagnose(env(pycoral="unrelated"))
    (verdict,) = [v for v in unrelated if "unrelated PyPI project" in v.message]
    assert verdict.level == WARN and "pip uninstall pycoral" in verdict.fix


def test_missing_runtime_numpy_2_and_missing_libedgetpu():
    (verdict,) = bad(diagnose(env(runtime=None, runtime_version=None, runtime_error="no tflite runtime found")))
    assert "no tflite runtime" in verdict.message and "pip install ai-edge-litert" in verdict.fix
    (verdict,) = bad(diagnose(env(numpy="2.1.0")))
    assert "numpy 2.1.0" in verdict.message and verdict.fix == 'pip install "numpy<2"'
    assert bad(diagnose(env(runtime="ai_edge_litert", runtime_version="2.3.0", numpy="2.1.0"))) == []
    # No libedgetpu: fine without TPUs (the CPU runs everything), bad with a TPU plugged in.
    assert levels(diagnose(env()), "libedgetpu (the Edge TPU runtime") == [INFO]
    assert levels(diagnose(env(tpus=[USB])), "libedgetpu (the Edge TPU runtime") == [BAD]


def test_report_names_every_fix():
    environment = env(libraries=[GOOGLE], tpus=[USB], pycoral="unrelated")
    verdicts = diagnose(environment)
    text = "\n".join(doctor.report_lines(environment, verdicts))
    assert "libedgetpu: /usr/lib/x86_64-linux-gnu/libedgetpu.so.1.0: Google's build 16.0" in text
    assert "Edge TPUs: 1" in text
    for verdict in verdicts:
        if verdict.level != "ok" and verdict.fix:
            assert f"fix: {verdict.fix}" in text


def test_gather_reads_ld_paths_build_label_and_dpkg_records(tmp_path):
    libdir, other = tmp_path / "lib" / "arch", tmp_path / "opt" / "lib"
    libdir.mkdir(parents=True)
    other.mkdir(parents=True)
    real = libdir / "libedgetpu.so.1.0"
    real.write_bytes(b"\x7fELF\0junk\0COMPILER=12.2.0,DATE=Sep 17 2025,TIME=12:34:40\0more")
    (libdir / "libedgetpu.so.1").symlink_to(real.name)
    (other / "libedgetpu.so.1").write_bytes(b"\x7fELF no label")
    conf = tmp_path / "ld.so.conf"
    (tmp_path / "ld.so.conf.d").mkdir()
    conf.write_text(f"include {tmp_path}/ld.so.conf.d/*.conf\n")
    (tmp_path / "ld.so.conf.d" / "arch.conf").write_text(f"# multiarch\n{libdir}\n")
    dpkg = tmp_path / "dpkg"
    (dpkg / "info").mkdir(parents=True)
    (dpkg / "status").write_text(
        "Package: bash\nStatus: install ok installed\nVersion: 5.2\n\n"
        "Package: libedgetpu1-std\nStatus: install ok installed\nVersion: 16.0tf2.19.1-1\n"
        "Maintainer: Nicola Ferralis <feranick@hotmail.com>\n")
    (dpkg / "info" / "libedgetpu1-std:arm64.list").write_text(f"/.\n{libdir}\n{real}\n")
    sysfs = tmp_path / "sys" / "bus" / "usb" / "devices" / "1-1"
    sysfs.mkdir(parents=True)
    (sysfs / "idVendor").write_text("18d1\n")
    (sysfs / "idProduct").write_text("9302\n")

    found = doctor.gather(sysfs_root=str(tmp_path / "sys"), dev_root=str(tmp_path / "dev"),
                          environ={"LD_LIBRARY_PATH": str(other)}, ld_conf=str(conf), dpkg_dir=str(dpkg))
    by_path = {lib.path: lib for lib in found.libraries}
    assert str(real) in by_path and str(other / "libedgetpu.so.1") in by_path
    ours = by_path[str(real)]
    assert ours.build_label == "COMPILER=12.2.0,DATE=Sep 17 2025,TIME=12:34:40"
    assert (ours.package, ours.package_version) == ("libedgetpu1-std", "16.0tf2.19.1-1")
    assert by_path[str(other / "libedgetpu.so.1")].package is None       # not installed by the package
    assert "invalid ELF header" in ours.load_error or "too short" in ours.load_error
    assert [t.type for t in found.tpus] == ["usb"]
    assert found.runtime in ("ai_edge_litert", "tflite_runtime") and found.python.count(".") == 2


def test_doctor_command_on_this_machine():
    result = run_cli("deploy", "doctor")
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith("Python 3.")
    assert "runtime: ai_edge_litert" in result.stdout
    assert "libedgetpu:" in result.stdout and "Edge TPUs:" in result.stdout
