"""INT8 calibration: frames to network-sized batches, the calibration cache file, and the Q/DQ
ONNX that TensorRT 11 builds INT8 engines from (made and run here with real ONNX Runtime)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.inference.backend import to_network_input
from cnd_depth_ros.inference.calibration import (
    CalibrationCache,
    CalibrationSet,
    output_layer_nodes,
    quantize_qdq,
)
from cnd_depth_ros.inference.engine_plan import ModelSource, plan_precision, prepare_onnx
from cnd_depth_ros.inference.export import ONNX_EXPORT_KEY, ONNX_METADATA_KEY
from cnd_depth_ros.models.artifact import ModelMetadata, save_artifact, weights_sha256
from cnd_depth_ros.models.registry import build_model
from cnd_depth_ros.training.datasets.frame import Frame

WIDTH, HEIGHT = 32, 16  # network size of the tiny test graph


def _frames(count: int, *, stereo: bool = True, size: tuple[int, int] = (48, 24)) -> list[Frame]:
    width, height = size
    camera = PinholeCamera(width, height, fx=40.0, fy=40.0, cx=width / 2, cy=height / 2,
                           baseline=0.1 if stereo else None)
    rng = np.random.default_rng(7)
    return [
        Frame(
            left=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            right=rng.integers(0, 256, (height, width, 3), dtype=np.uint8) if stereo else None,
            camera=camera,
            name=f"frame{index}",
        )
        for index in range(count)
    ]


def test_batches_are_network_sized_inputs_spread_over_the_dataset() -> None:
    frames = _frames(10)
    calibration = CalibrationSet(frames, width=WIDTH, height=HEIGHT, stereo=True, batch_size=2,
                                 max_frames=5)
    assert calibration.indices == [0, 3, 6, 9]  # at most 5, in full batches, evenly spread
    batches = list(calibration.batches())
    assert len(batches) == len(calibration) == 2
    for batch, first in zip(batches, (0, 6), strict=True):
        assert set(batch) == {"left", "right"}
        assert batch["left"].shape == (2, 3, HEIGHT, WIDTH) and batch["left"].dtype == np.float32
        expected = to_network_input(frames[first].right, WIDTH, HEIGHT)[0]
        np.testing.assert_array_equal(batch["right"][0], expected)
        assert batch["left"].min() >= 0.0 and batch["left"].max() <= 1.0
    assert len(list(calibration.batches())) == 2  # a new pass starts over


def test_mono_batches_and_bad_settings() -> None:
    mono = CalibrationSet(_frames(3, stereo=False), width=WIDTH, height=HEIGHT, stereo=False)
    assert [set(batch) for batch in mono.batches()] == [{"left"}] * 3
    with pytest.raises(ValueError, match="frame0 has none"):
        next(CalibrationSet(_frames(2, stereo=False), width=WIDTH, height=HEIGHT,
                            stereo=True).batches())
    with pytest.raises(ValueError, match="at least 4 frame"):
        CalibrationSet(_frames(3), width=WIDTH, height=HEIGHT, stereo=True, batch_size=4)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        CalibrationSet(_frames(3), width=WIDTH, height=HEIGHT, stereo=True, batch_size=0)


def test_calibration_cache_file(tmp_path: Path) -> None:
    cache = CalibrationCache(tmp_path / "calib" / "table.cache")
    assert cache.read() is None
    cache.write(memoryview(b"TRT-10 EntropyCalibration2\nleft: 3c010a14\n"))
    assert cache.read() == b"TRT-10 EntropyCalibration2\nleft: 3c010a14\n"
    cache.path.write_bytes(b"")
    assert cache.read() is None


def _metadata() -> ModelMetadata:
    camera = PinholeCamera(WIDTH, HEIGHT, fx=20.0, fy=20.0, cx=15.5, cy=7.5)
    return ModelMetadata(variant="cnd_micro", input_height=HEIGHT, input_width=WIDTH,
                         output="depth", training_camera=camera, stereo=False)


def _tiny_export(path: Path, precision: str = "fp32") -> Path:
    """A two-convolution mono net with the I/O and metadata of `cnd-depth export`; its second
    conv, to one channel, is the output layer."""
    rng = np.random.default_rng(3)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (1, 8, 3, 3)).astype(np.float32), "w2"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["left", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"], "relu"),
            helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
            helper.make_node("Softplus", ["c2"], ["depth"], "head"),
        ],
        "tiny",
        [helper.make_tensor_value_info("left", TensorProto.FLOAT, [1, 3, HEIGHT, WIDTH])],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 1, HEIGHT, WIDTH])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {
        ONNX_METADATA_KEY: json.dumps(_metadata().to_json()),
        ONNX_EXPORT_KEY: json.dumps({"precision": precision}),
    })
    onnx.save_model(model, str(path))
    return path


def test_qdq_model_is_symmetric_int8_and_close_to_fp32(tmp_path: Path) -> None:
    source = _tiny_export(tmp_path / "tiny.onnx")
    calibration = CalibrationSet(_frames(8, stereo=False), width=WIDTH, height=HEIGHT,
                                 stereo=False)
    quantized = quantize_qdq(source, tmp_path / "tiny.qdq.onnx", calibration)
    proto = onnx.load_model(str(quantized))
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("QuantizeLinear") >= 2 and "DequantizeLinear" in ops
    initializers = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    zero_points = [
        initializers[node.input[2]]
        for node in proto.graph.node
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2
    ]
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)

    image = next(calibration.batches())
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    expected = reference.run(None, image)[0]
    actual = int8.run(None, image)[0]
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).mean() < 0.05 * np.abs(expected).mean()


def test_the_output_layer_stays_float(tmp_path: Path) -> None:
    """The one-channel conv and the depthwise conv feeding it (the export's form of the decoder's
    last layer) read float weights; every other conv is quantised."""
    source = _tiny_export(tmp_path / "tiny.onnx")
    model = onnx.load_model(str(source))
    assert output_layer_nodes(model) == ["conv2"]
    depthwise = helper.make_node("Conv", ["r1", "wd"], ["d1"], "depthwise", group=8,
                                 pads=[1, 1, 1, 1])
    model.graph.initializer.append(numpy_helper.from_array(
        np.random.default_rng(0).normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32), "wd"))
    model.graph.node.insert(2, depthwise)
    model.graph.node[3].input[0] = "d1"
    onnx.checker.check_model(model)
    assert sorted(output_layer_nodes(model)) == ["conv2", "depthwise"]
    onnx.save_model(model, str(source))

    calibration = CalibrationSet(_frames(4, stereo=False), width=WIDTH, height=HEIGHT,
                                 stereo=False)
    proto = onnx.load_model(str(quantize_qdq(source, tmp_path / "q.onnx", calibration)))
    nodes = proto.graph.node
    dequantised = {node.output[0] for node in nodes if node.op_type == "DequantizeLinear"}
    weight_is_quantised = {
        node.name: node.input[1] in dequantised for node in nodes if node.op_type == "Conv"
    }
    assert weight_is_quantised == {"conv1": True, "depthwise": False, "conv2": False}


def test_prepare_onnx_uses_or_refuses_an_export(tmp_path: Path) -> None:
    fp32 = ModelSource.open(_tiny_export(tmp_path / "fp32.onnx"))
    assert fp32.onnx_precision == "fp32" and fp32.metadata == _metadata()
    fp16 = ModelSource.open(_tiny_export(tmp_path / "fp16.onnx", precision="fp16"))
    strong, weak = (
        lambda p: plan_precision(p, weakly_typed=False),
        lambda p: plan_precision(p, weakly_typed=True),
    )
    # The export as it is, whenever it is the graph the plan parses.
    assert prepare_onnx(fp32, strong("fp32"), tmp_path) == fp32.path
    assert prepare_onnx(fp32, weak("fp16"), tmp_path) == fp32.path
    assert prepare_onnx(fp16, strong("fp16"), tmp_path) == fp16.path
    with pytest.raises(ValueError, match=r"fp32\.onnx is an FP32 export.*cnd-depth export --fp16"):
        prepare_onnx(fp32, strong("fp16"), tmp_path)
    with pytest.raises(ValueError, match=r"INT8 needs calibration images.*--calib-data"):
        prepare_onnx(fp32, strong("int8"), tmp_path)
    calibration = CalibrationSet.for_model(_frames(2, stereo=False), fp32.metadata)
    with pytest.raises(ValueError, match=r"fp16\.onnx is an FP16 export"):
        prepare_onnx(fp16, strong("int8"), tmp_path, calibration)
    qdq = prepare_onnx(fp32, strong("int8"), tmp_path, calibration)
    assert qdq.parent == tmp_path and "QuantizeLinear" in {
        node.op_type for node in onnx.load_model(str(qdq)).graph.node
    }
    with pytest.raises(ValueError, match="static shape 32x16"):
        ModelSource.open(fp32.path, width=64)


def test_model_source_of_an_artifact_at_another_size(tmp_path: Path) -> None:
    model = build_model("cnd_stereo", width_mult=0.35, aspp_channels=16,
                        decoder_channels=(16, 16, 16, 8), skip_channels=8)
    camera = PinholeCamera(64, 32, fx=50.0, fy=50.0, cx=31.5, cy=15.5, baseline=0.1)
    metadata = ModelMetadata(variant="cnd_stereo", input_height=32, input_width=64,
                             output=model.output_kind, training_camera=camera, stereo=True,
                             model_config=asdict(model.config))
    base = save_artifact(model.eval(), metadata, tmp_path / "stereo")
    source = ModelSource.open(base, height=64, width=128)
    assert source.onnx_precision is None and source.sha256 == weights_sha256(base)
    assert (source.metadata.input_width, source.metadata.input_height) == (128, 64)
    assert source.metadata.training_camera.fx == pytest.approx(100.0)  # scaled with the image
