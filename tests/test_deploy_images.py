"""`deploy --image`: what each image gets printed, and the errors that name what to fix."""
import json
import re
import shutil

import numpy as np
from PIL import Image

import runfolder
from datasets import InputSpec, load_image
from deploy.core.classify import classify, logits, whole_model_chain
from deploy.core.open import open_chain
from tests.test_deploy import confident_test_image, deploy


def _top_class(stdout, path):
    found = re.search(rf"(?m)^{re.escape(str(path))}: (\S+) \(", stdout)
    assert found, stdout
    return found.group(1)


def test_classify_a_png_prints_its_class(tiny_run, tmp_path):
    png, pixels = confident_test_image(tiny_run, tmp_path)
    result = deploy("--run", tiny_run, "--image", png)
    assert result.returncode == 0, result.stderr
    reference = whole_model_chain(runfolder.resolve(tiny_run, runfolder.load(tiny_run)["quantization"]["int8_model"]))
    expected = int(np.argmax(logits(reference, pixels)))
    names = runfolder.load(tiny_run)["dataset"]["class_names"]
    assert _top_class(result.stdout, png) == names[expected]
    assert re.search(r"(?m)^stage 0: cpu \(", result.stdout)      # where each stage ran is shown


def test_classify_wrong_size_and_colour_need_resize_and_convert(tiny_run, tmp_path):
    _, pixels = confident_test_image(tiny_run, tmp_path)
    big = tmp_path / "big.png"
    Image.fromarray(pixels[:, :, 0], mode="L").resize((56, 40), Image.NEAREST).save(big)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(pixels[:, :, 0], mode="L").convert("RGB").save(rgb)

    result = deploy("--run", tiny_run, "--image", big, "--no-resize")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "56x40" in result.stderr and "28x28" in result.stderr and "--resize" in result.stderr
    result = deploy("--run", tiny_run, "--image", rgb, "--no-convert")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "mode RGB" in result.stderr and "--convert" in result.stderr

    result = deploy("--run", tiny_run, "--image", big, rgb, "--top-k", 1)   # resized and converted by default
    assert result.returncode == 0, result.stderr
    assert f"note: {big}: resized 56x40 to 28x28" in result.stderr
    assert f"note: {rgb}: converted RGB to L" in result.stderr
    assert result.stderr.count(f"note: {big}:") == 1
    _, chain = open_chain(tiny_run)
    spec = InputSpec(28, 28, 1)
    names = runfolder.load(tiny_run)["dataset"]["class_names"]
    for path in (big, rgb):
        expected = classify(chain, load_image(path, spec, resize=True, convert=True), top_k=1)[0].id
        assert _top_class(result.stdout, path) == names[expected]
    # grey -> RGB -> grey is lossless, so the RGB copy gets the original's class
    assert _top_class(result.stdout, rgb) == names[classify(chain, pixels, top_k=1)[0].id]


def test_corrupt_image_is_a_clear_error(tiny_run, tmp_path):
    png, _ = confident_test_image(tiny_run, tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(png.read_bytes()[:40])
    result = deploy("--run", tiny_run, "--image", broken)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(broken) in result.stderr and "not a readable image" in result.stderr


def test_images_and_folders_of_them_each_get_a_line_and_a_bad_one_does_not_stop_the_rest(tiny_run, tmp_path):
    png, pixels = confident_test_image(tiny_run, tmp_path)
    folder = tmp_path / "album" / "2024"
    folder.mkdir(parents=True)
    shutil.copy(png, folder / "a.png")
    Image.fromarray(pixels[:, :, 0], mode="L").resize((56, 56)).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image, and not looked at")
    broken = tmp_path / "album" / "broken.png"
    broken.write_bytes(png.read_bytes()[:40])
    result = deploy("--run", tiny_run, "--image", png, tmp_path / "album")
    assert result.returncode == 2, result.stdout + result.stderr
    classified = [line.split(": ")[0] for line in result.stdout.splitlines() if ": " in line and "(" in line
                  and not line.startswith("stage ")]
    assert classified == [str(png), str(folder / "a.png"), str(folder / "b.jpg")]
    assert f"error: {broken}" in result.stderr or str(broken) in result.stderr
    assert "1 of 4 image(s) could not be classified" in result.stderr and "notes.txt" not in result.stderr
    as_json = deploy("--run", tiny_run, "--image", png, broken, "--json", "--top-k", 2)
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(png), str(broken)] and as_json.returncode == 2
    assert len(lines[0]["top"]) == 2 and set(lines[0]["top"][0]) == {"id", "label", "score"}
    assert "not a readable image" in lines[1]["error"]


def test_an_exit_threshold_on_a_run_without_exits_is_refused_with_the_fix(tiny_run, tmp_path):
    png, _ = confident_test_image(tiny_run, tmp_path)
    for args in (("--eval",), ("--image", png)):
        result = deploy("--run", tiny_run, *args, "--exit-threshold", "0.9")
        assert result.returncode == 2, result.stdout + result.stderr
        assert "this run has no early-exit heads" in result.stderr and "--exits" in result.stderr
