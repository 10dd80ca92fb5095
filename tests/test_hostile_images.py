"""Pixel bombs: a small file that decodes to hundreds of MB is refused from its header, everywhere an
image is opened (the HTTP API, deploy --image, the folder data set), and concurrent decodes stay
within one shared budget."""
import concurrent.futures
import io
import pathlib
import threading
import time

import httpx
import pytest
from PIL import Image

from datasets import ImageError, InputSpec, load_dataset, load_image
from datasets.decode_limits import DecodeBudget, DecodeBusy, decoded_bytes
from tests.conftest import run_cli
from tests.test_serving_api import ServerProcess

MIB = 2 ** 20


def _png(mode, size, colour=0):
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb():
    """13000x13000 RGBA: 676 MB decoded, well under a megabyte as a file."""
    data = _png("RGBA", (13000, 13000))
    assert len(data) < 1 * MIB
    return data


def _vm(pid, field):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def test_the_header_decides_before_any_pixel_is_decoded(bomb, tmp_path):
    spec = InputSpec(28, 28, 1)
    with pytest.raises(ImageError, match=r"13000x13000 = 169.0 megapixels, more than the 16.8 allowed"):
        load_image(bomb, spec, resize=True, convert=True)
    with pytest.raises(ImageError, match="expected 28x28; pass --resize"):   # size known from the header alone
        load_image(bomb, spec, convert=True)
    with pytest.raises(ImageError, match="more than the 0.0 allowed"):
        load_image(_png("L", (28, 28)), spec, max_pixels=100)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"   # Pillow would run Ghostscript on it
    with pytest.raises(ImageError, match="not one of PNG, JPEG"):
        load_image(eps, spec)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_instead_of_refused():
    buffer = io.BytesIO()
    Image.new("RGB", (8000, 6000), (200, 30, 30)).save(buffer, format="JPEG")   # 48 MP, a phone photo
    pixels = load_image(buffer.getvalue(), InputSpec(224, 224, 3), resize=True)
    assert pixels.shape == (224, 224, 3) and abs(int(pixels[..., 0].mean()) - 200) <= 3
    with pytest.raises(ImageError, match="megapixels"):   # 1/8 scale would still be over this limit
        load_image(buffer.getvalue(), InputSpec(224, 224, 3), resize=True, max_pixels=500_000)


def test_the_budget_bounds_decodes_across_threads_and_says_busy():
    budget = DecodeBudget(100, wait_s=10)
    inside, most = [0], [0]
    lock = threading.Lock()

    def decode():
        with budget.reserve(60):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: decode(), range(8)))
    assert most[0] == 1 and budget.peak == 60 and budget.in_use == 0
    budget = DecodeBudget(100, wait_s=0.1)
    with budget.reserve(70), pytest.raises(DecodeBusy, match="busy: decoding this image needs"):
        with budget.reserve(40):
            pass
    assert budget.in_use == 0


def test_deploy_image_and_the_folder_data_set_refuse_the_bomb(tiny_run, bomb, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    result = run_cli("deploy", "--run", tiny_run, "--image", path, "--resize", "--convert")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "169.0 megapixels" in result.stderr and "Traceback" not in result.stderr
    for name in ("a", "b"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        Image.new("RGB", (40, 30), (10, 200, 10)).save(tmp_path / "photos" / name / "ok.png")
    (tmp_path / "photos" / "a" / "bomb.png").write_bytes(bomb)
    data = load_dataset("folder", path=str(tmp_path / "photos"), size=16)
    assert len(data) == 2 and data.skipped[0]["path"].endswith("bomb.png")
    assert "megapixels" in data.skipped[0]["reason"]


@pytest.mark.slow
def test_the_api_under_a_pixel_bomb_stays_within_its_budget(tiny_run, bomb, tmp_path):
    """Four concurrent uploads of the bomb, then four of the largest allowed image (4096x4096 RGBA)."""
    server = ServerProcess("serve-api", tiny_run, "--queue", f"sqlite:{tmp_path}/jobs.db").wait_ready()
    try:
        idle = _vm(server.proc.pid, "VmRSS")

        def post(data, query=""):
            return httpx.post(f"{server.url}/v1/jobs{query}", content=data, timeout=60,
                              headers={"Content-Type": "image/png"})
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            bombed = list(pool.map(lambda _: post(bomb, "?resize=true&convert=true"), range(4)))
        after_bomb = _vm(server.proc.pid, "VmHWM")
        largest = _png("RGBA", (4096, 4096), (0, 90, 0, 255))
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            allowed = list(pool.map(lambda _: post(largest, "?resize=true&convert=true"), range(4)))
        after_largest = _vm(server.proc.pid, "VmHWM")
        assert httpx.get(server.url + "/healthz").status_code == 200
    finally:
        server.stop()
    assert [r.status_code for r in bombed] == [422] * 4
    assert all("megapixels" in r.json()["error"] for r in bombed)
    assert [r.status_code for r in allowed] == [202] * 4, [r.text for r in allowed]
    image = decoded_bytes("RGBA", 4096, 4096)
    print(f"idle RSS {idle / MIB:.0f} MiB; peak after 4 bombs {after_bomb / MIB:.0f} MiB; after 4 of the "
          f"largest allowed images {after_largest / MIB:.0f} MiB (one decoded: {image / MIB:.0f} MiB)")
    assert after_bomb - idle < image, "refusing the bomb must not decode it"
    assert after_largest - idle < 2 * image + 32 * MIB, "concurrent decodes must share one budget"
