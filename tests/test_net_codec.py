"""Tensor messages and stage plans, without servers: what each stage takes, and refusals of bad tensors."""
import numpy as np
import pytest

from deploy.net import codec, plan, stage_pb2


def _spec(name, shape, dtype="int8"):
    return {"name": name, "shape": shape, "dtype": dtype, "scale": 0.5, "zero_point": 0}


def _manifest():
    """Stage 2 reads 'skip', made by stage 0: it must travel through stage 1."""
    a, skip, b, out = _spec("a", [1, 4], "uint8"), _spec("skip", [1, 3]), _spec("b", [1, 2]), _spec("out", [1, 5])
    return {"stages": [{"index": 0, "inputs": [a], "outputs": [b, skip]},
                       {"index": 1, "inputs": [b], "outputs": [_spec("c", [1, 2])]},
                       {"index": 2, "inputs": [_spec("c", [1, 2]), skip], "outputs": [out]}],
            "split": {"model_inputs": [a], "model_outputs": [out]}}


def test_a_tensor_made_by_stage_0_and_read_by_stage_2_travels_through_stage_1():
    plans = plan.chain_plans(_manifest())
    names = [[t["name"] for t in p.receives] for p in plans]
    assert names == [["a"], ["b", "skip"], ["c", "skip"]]
    assert [t["name"] for t in plans[0].sends] == ["b", "skip"]
    assert plans[2].sends == () and plans[2].is_last
    assert [t["name"] for t in plans[1].returns] == ["out"]


def test_stage_plan_names_the_valid_range():
    with pytest.raises(ValueError, match="stages 0 to 2"):
        plan.stage_plan(_manifest(), 3)


def test_encode_decode_round_trip_is_byte_exact():
    specs = plan.chain_plans(_manifest())[1].receives
    arrays = {"b": np.array([[-128, 127]], np.int8), "skip": np.array([[1, -2, 3]], np.int8)}
    tensors = codec.encode(arrays)
    assert [t.data for t in tensors] == [arrays["b"].tobytes(), arrays["skip"].tobytes()]
    decoded = codec.decode(tensors, specs, "stage 1")
    assert all(np.array_equal(decoded[n], arrays[n]) and decoded[n].dtype == np.int8 for n in arrays)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.__setattr__("name", "bogus"), "unexpected tensor 'bogus'; this stage takes 'a'"),
    (lambda t: t.__setattr__("dtype", "int8"), "tensor 'a' has dtype 'int8', expected 'uint8'"),
    (lambda t: t.shape.__setitem__(1, 5), r"tensor 'a' has shape \[1, 5\], expected \[1, 4\]"),
    (lambda t: t.__setattr__("data", t.data[:3]), "tensor 'a' carries 3 bytes, expected 4"),
    (lambda t: t.__setattr__("data", t.data + b"\0"), "tensor 'a' carries 5 bytes, expected 4"),
])
def test_decode_refuses_a_mismatch_naming_the_tensor_and_what_is_expected(change, message):
    tensor = codec.encode({"a": np.zeros([1, 4], np.uint8)})[0]
    change(tensor)
    with pytest.raises(codec.TensorMismatch, match=message):
        codec.decode([tensor], plan.chain_plans(_manifest())[0].receives, "stage 0")


def test_decode_refuses_missing_repeated_and_empty():
    specs = plan.chain_plans(_manifest())[1].receives
    b = codec.encode({"b": np.zeros([1, 2], np.int8)})[0]
    with pytest.raises(codec.TensorMismatch, match=r"tensor 'skip' \(int8 \[1, 3\]\) is missing"):
        codec.decode([b], specs, "stage 1")
    with pytest.raises(codec.TensorMismatch, match="tensor 'b' is sent twice"):
        codec.decode([b, b], specs, "stage 1")
    with pytest.raises(codec.TensorMismatch, match="stage 1: the request carries no tensors; expected 'b'"):
        codec.decode(stage_pb2.StageRequest().tensors, specs, "stage 1")
