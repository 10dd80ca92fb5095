"""Quantization arithmetic: round trip, saturation, rounding half away from zero."""
import numpy as np
import pytest

from deploy.core.tensors import dequantize, quantize

INT8 = {"name": "t8", "dtype": "int8", "scale": 0.0275, "zero_point": 3}
UINT8 = {"name": "u8", "dtype": "uint8", "scale": 0.0938, "zero_point": 117}


@pytest.mark.parametrize("detail", [INT8, UINT8], ids=["int8", "uint8"])
def test_quantize_dequantize_round_trip(detail):
    info = np.iinfo(detail["dtype"])
    every = np.arange(info.min, info.max + 1).astype(detail["dtype"])
    real = dequantize(every, detail)
    assert real.dtype == np.float32
    np.testing.assert_allclose(real, (every.astype(np.float64) - detail["zero_point"]) * detail["scale"],
                               rtol=1e-6)
    assert np.array_equal(quantize(real, detail), every)


def test_quantize_saturates_instead_of_wrapping():
    top = (127 - INT8["zero_point"]) * INT8["scale"]
    bottom = (-128 - INT8["zero_point"]) * INT8["scale"]
    values = np.array([top + 1.0, top * 100, 1e9, bottom - 1.0, bottom * 100, -1e9])
    assert quantize(values, INT8).tolist() == [127, 127, 127, -128, -128, -128]
    assert quantize(np.array([1e6, -1e6]), UINT8).tolist() == [255, 0]


def test_quantize_rounds_half_away_from_zero():
    unit = {"name": "u", "dtype": "int8", "scale": 1.0, "zero_point": 0}
    halves = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, -0.49])
    assert quantize(halves, unit).tolist() == [1, 2, 3, -1, -2, -3, 0, 0]
    assert np.round(halves).tolist() != [1, 2, 3, -1, -2, -3, 0, 0]     # numpy rounds half to even
    shifted = dict(unit, zero_point=10)                                 # zero point is added after rounding
    assert quantize(halves, shifted).tolist() == [11, 12, 13, 9, 8, 7, 10, 10]
