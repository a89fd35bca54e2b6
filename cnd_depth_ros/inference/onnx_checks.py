"""Does an ONNX graph parse in TensorRT? Checked at export, not minutes later on the robot.

:data:`TENSORRT_OPERATORS` is the set of operators marked supported ("Y") in the operator support
matrix of the TensorRT ONNX parser, ``docs/operators.md`` of https://github.com/onnx/onnx-tensorrt
in its TensorRT 8.5 edition (opsets up to 17). Newer TensorRT versions (10, 11) support a superset,
so a graph inside this list builds on JetPack 5 Jetsons as well as on current GPUs. The matrix's
restrictions that an exported CND graph can meet are checked too: convolution weights must be
initializers, and ``Resize`` only has some modes.
"""

from __future__ import annotations

import onnx

from cnd_depth_ros.errors import ArtifactError

__all__ = ["TENSORRT_OPERATORS", "check_tensorrt_compatible"]

TENSORRT_OPERATORS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
    Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GridSample GRU HardSigmoid HardSwish Identity If ImageScaler
    InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
    LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg
    NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
    RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1
    ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter
    ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
    Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose
    Trilu Unsqueeze Upsample Where Xor
    """.split()  # noqa: SIM905 - reads like the matrix it is copied from
)

_RESIZE_MODES = frozenset({"nearest", "linear"})
_RESIZE_TRANSFORMS = frozenset(
    {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
)


def _string_attribute(node: onnx.NodeProto, name: str, default: str) -> str:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.s.decode()
    return default


def check_tensorrt_compatible(model: onnx.ModelProto, source: str) -> None:
    """Fail loudly on the first node TensorRT's ONNX parser would reject.

    :raises ArtifactError: naming ``source``, the node and why.
    """
    constants = {tensor.name for tensor in model.graph.initializer}
    constants |= {
        out for node in model.graph.node if node.op_type == "Constant" for out in node.output
    }
    for node in model.graph.node:
        where = f"{source}: node {node.name or '<unnamed>'!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx") or node.op_type not in TENSORRT_OPERATORS:
            domain = f" in domain {node.domain!r}" if node.domain else ""
            raise ArtifactError(
                f"{where}: operator {node.op_type!r}{domain} is not supported by the TensorRT "
                "ONNX parser (see cnd_depth_ros/inference/onnx_checks.py)"
            )
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] not in constants:
            raise ArtifactError(f"{where}: TensorRT needs convolution weights as initializers")
        if node.op_type == "Resize":
            mode = _string_attribute(node, "mode", "nearest")
            transform = _string_attribute(node, "coordinate_transformation_mode", "half_pixel")
            if mode not in _RESIZE_MODES or transform not in _RESIZE_TRANSFORMS:
                raise ArtifactError(
                    f"{where}: Resize mode {mode!r} / {transform!r} is not supported by TensorRT"
                )
