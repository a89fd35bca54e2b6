"""INT8 calibration: frames to network-sized batches, their fingerprint, failing frames, and the
Q/DQ ONNX that TensorRT builds INT8 engines from (made and run here with real ONNX Runtime)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fixtures.calibration_frames import FailingFrames, random_frames
from fixtures.tiny_onnx import HEIGHT, WIDTH, tiny_export, tiny_metadata
from onnx import helper, numpy_helper

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.errors import DatasetError
from cnd_depth_ros.inference.backend import to_network_input
from cnd_depth_ros.inference.calibration import (
    QDQ_FP16_OPSET,
    CalibrationSet,
    output_layer_nodes,
    quantize_qdq,
)
from cnd_depth_ros.inference.engine_plan import ModelSource, plan_precision, prepare_onnx
from cnd_depth_ros.models.artifact import ModelMetadata, save_artifact, weights_sha256
from cnd_depth_ros.models.registry import build_model


def test_batches_are_network_sized_inputs_spread_over_the_dataset() -> None:
    frames = random_frames(10)
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
    mono = CalibrationSet(random_frames(3, stereo=False), width=WIDTH, height=HEIGHT, stereo=False)
    assert [set(batch) for batch in mono.batches()] == [{"left"}] * 3
    with pytest.raises(ValueError, match="frame0 has none"):
        next(CalibrationSet(random_frames(2, stereo=False), width=WIDTH, height=HEIGHT,
                            stereo=True).batches())
    with pytest.raises(ValueError, match="at least 4 frame"):
        CalibrationSet(random_frames(3), width=WIDTH, height=HEIGHT, stereo=True, batch_size=4)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        CalibrationSet(random_frames(3), width=WIDTH, height=HEIGHT, stereo=True, batch_size=0)


def test_fingerprint_follows_the_inputs_calibration_reads() -> None:
    frames = random_frames(4)
    calibration = CalibrationSet(frames, width=WIDTH, height=HEIGHT, stereo=True)
    again = CalibrationSet(list(frames), width=WIDTH, height=HEIGHT, stereo=True)
    assert calibration.fingerprint() == again.fingerprint()
    others = [
        CalibrationSet(frames[:3], width=WIDTH, height=HEIGHT, stereo=True),
        CalibrationSet(frames, width=WIDTH, height=HEIGHT, stereo=True, max_frames=2),
        CalibrationSet(frames, width=2 * WIDTH, height=HEIGHT, stereo=True),
        CalibrationSet(frames[::-1], width=WIDTH, height=HEIGHT, stereo=True),
    ]
    digests = {calibration.fingerprint(), *(other.fingerprint() for other in others)}
    assert len(digests) == len(others) + 1


def test_a_failing_frame_is_named_and_never_ends_calibration_quietly(tmp_path: Path) -> None:
    frames = FailingFrames(random_frames(5, stereo=False), bad=3)
    calibration = CalibrationSet(frames, width=WIDTH, height=HEIGHT, stereo=False)
    with pytest.raises(ValueError, match=r"batch 4/5 \(dataset frame\(s\) 3\).*truncated PNG"):
        calibration.fingerprint()
    reader = calibration.data_reader()
    assert [reader.get_next() is not None for _ in range(5)] == [True] * 3 + [False] * 2
    assert reader.used == 3
    with pytest.raises(ValueError, match=r"INT8 calibration failed: .*000003\.png") as raised:
        reader.check()
    assert isinstance(raised.value.__cause__.__cause__, DatasetError)
    # Through ONNX Runtime's quantiser: the frame fails while calibrating, after a first read.
    flaky = CalibrationSet(FailingFrames(random_frames(5, stereo=False), bad=3, fail_from=2),
                           width=WIDTH, height=HEIGHT, stereo=False)
    flaky.fingerprint()
    with pytest.raises(ValueError, match=r"INT8 calibration failed: calibration batch 4/5"):
        quantize_qdq(tiny_export(tmp_path / "tiny.onnx"), tmp_path / "q.onnx", flaky)


def test_a_reader_left_unfinished_is_an_error() -> None:
    calibration = CalibrationSet(random_frames(3, stereo=False), width=WIDTH, height=HEIGHT,
                                 stereo=False)
    reader = calibration.data_reader()
    reader.get_next()
    with pytest.raises(ValueError, match="read 1 of 3 batches"):
        reader.check()
    while reader.get_next() is not None:
        pass
    reader.check()


def test_qdq_model_is_symmetric_int8_and_close_to_fp32(tmp_path: Path) -> None:
    source = tiny_export(tmp_path / "tiny.onnx")
    calibration = CalibrationSet(random_frames(8, stereo=False), width=WIDTH, height=HEIGHT,
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
    source = tiny_export(tmp_path / "tiny.onnx")
    model = onnx.load_model(str(source))
    assert output_layer_nodes(model) == ["conv2"]
    depthwise = helper.make_node("Conv", ["r1", "wd"], ["d1"], "depthwise", group=8,
                                 pads=[1, 1, 1, 1])
    model.graph.initializer.append(numpy_helper.from_array(
        np.random.default_rng(0).normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32), "wd"))
    model.graph.node.insert(3, depthwise)  # after the relu, feeding conv2
    model.graph.node[4].input[0] = "d1"
    onnx.checker.check_model(model)
    assert sorted(output_layer_nodes(model)) == ["conv2", "depthwise"]
    onnx.save_model(model, str(source))

    calibration = CalibrationSet(random_frames(4, stereo=False), width=WIDTH, height=HEIGHT,
                                 stereo=False)
    proto = onnx.load_model(str(quantize_qdq(source, tmp_path / "q.onnx", calibration)))
    nodes = proto.graph.node
    dequantised = {node.output[0] for node in nodes if node.op_type == "DequantizeLinear"}
    weight_is_quantised = {
        node.name: node.input[1] in dequantised for node in nodes if node.op_type == "Conv"
    }
    assert weight_is_quantised == {"conv1": True, "depthwise": False, "conv2": False}


def test_prepare_onnx_uses_or_refuses_an_export(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fp32 = ModelSource.open(tiny_export(tmp_path / "fp32.onnx"))
    assert fp32.onnx_precision == "fp32" and fp32.metadata == tiny_metadata()
    fp16 = ModelSource.open(tiny_export(tmp_path / "fp16.onnx", precision="fp16"))
    strong, weak = (
        lambda p: plan_precision(p, weakly_typed=False),
        lambda p: plan_precision(p, weakly_typed=True),
    )
    # The export as it is, whenever it is a graph the plan builds from.
    assert prepare_onnx(fp32, strong("fp32"), tmp_path) == fp32.path
    assert prepare_onnx(fp32, weak("fp16"), tmp_path) == fp32.path
    assert prepare_onnx(fp16, weak("fp16"), tmp_path) == fp16.path
    assert prepare_onnx(fp16, strong("fp16"), tmp_path) == fp16.path
    with pytest.raises(ValueError, match=r"fp32\.onnx is an FP32 export.*cnd-depth export --fp16"):
        prepare_onnx(fp32, strong("fp16"), tmp_path)
    with pytest.raises(ValueError, match=r"fp16\.onnx is an FP16 export.*`cnd-depth export`"):
        prepare_onnx(fp16, weak("fp32"), tmp_path)
    for int8 in (strong("int8"), weak("int8")):
        with pytest.raises(ValueError, match=r"INT8 needs calibration images.*--calib-data"):
            prepare_onnx(fp32, int8, tmp_path)
    calibration = CalibrationSet.for_model(random_frames(2, stereo=False), fp32.metadata)
    with caplog.at_level("WARNING"):
        qdq = prepare_onnx(fp32, strong("int8"), tmp_path, calibration)
    assert "fp32.onnx is an FP32 export: the layers INT8 does not cover stay FP32" in caplog.text
    assert qdq.parent == tmp_path and "QuantizeLinear" in {
        node.op_type for node in onnx.load_model(str(qdq)).graph.node
    }
    with pytest.raises(ValueError, match="static shape 32x16"):
        ModelSource.open(fp32.path, width=64)


def test_int8_from_an_fp16_export_keeps_the_rest_in_fp16(tmp_path: Path) -> None:
    """The Q/DQ graph TensorRT builds INT8 from: float16 scales (opset 19, raised from the
    export's 18), the layers not quantised (the softplus head, the output layer) in float16."""
    fp16 = ModelSource.open(tiny_export(tmp_path / "fp16.onnx", precision="fp16"))
    frames = random_frames(4, stereo=False)
    calibration = CalibrationSet.for_model(frames, fp16.metadata)
    qdq = prepare_onnx(fp16, plan_precision("int8", weakly_typed=True), tmp_path, calibration)
    proto = onnx.load_model(str(qdq))
    onnx.checker.check_model(proto, full_check=True)
    assert [entry.version for entry in proto.opset_import if entry.domain == ""] == [
        QDQ_FP16_OPSET
    ]
    scales = [init for init in proto.graph.initializer if init.name.endswith("_scale")]
    assert scales and {init.data_type for init in scales} == {onnx.TensorProto.FLOAT16}
    types = {value.name: value.type.tensor_type.elem_type
             for value in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    assert types["soft"] == onnx.TensorProto.FLOAT16  # the head, not quantised, stays FP16

    options = ort.SessionOptions()  # ONNX Runtime's CPU fusions have no FP16-scale kernels
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    image = next(calibration.batches())
    reference = tiny_export(tmp_path / "fp32.onnx")
    expected = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"]).run(
        None, image)[0]
    actual = ort.InferenceSession(str(qdq), options, providers=["CPUExecutionProvider"]).run(
        None, image)[0]
    assert np.abs(actual - expected).mean() < 0.05 * np.abs(expected).mean()


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
