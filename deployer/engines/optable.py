"""TensorRT's ONNX operator support table, shipped as data (default `ai.onnx` domain only).

Sources (onnx/onnx-tensorrt `docs/operators.md`, the parser's own support matrix):
  * "10.15": the TensorRT 10.15 revision ("opset 9 to opset 24").
  * "8.4": the TensorRT 8.4 revision (the newest 8.x operator table we could read). For TensorRT 8.6 the
    opset limit (17) comes from the 8.6 revision of `docs/operators_dla.md` in the same repository.
Not available to us: per-op tables for 8.5/8.6, 10.0-10.14 and 11.x; `preflight.py` therefore only
*fails* on an op that a table no newer than the target marks unsupported, and warns otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpTable:
    """Supported / unsupported ONNX ops for one documented TensorRT version."""

    version: tuple[int, int]
    min_opset: int
    max_opset: int
    supported: frozenset[str]
    unsupported: frozenset[str]


def _ops(text: str) -> frozenset[str]:
    return frozenset(text.split())


_TRT_10_15 = OpTable(
    version=(10, 15),
    min_opset=9,
    max_opset=24,
    supported=_ops(
        """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
        BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
        CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
        Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
        Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
        Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
        LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
        MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
        ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike
        Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
        ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign
        RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid
        Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
        TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor"""
    ),
    unsupported=_ops(
        """AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress
        ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool
        MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement
        OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty
        SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence
        StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique"""
    ),
)

_TRT_8_4 = OpTable(
    version=(8, 4),
    min_opset=1,
    max_opset=17,  # 8.6's documented limit (operators_dla.md @ 8.6); the 8.4 page itself says 13
    supported=_ops(
        """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil
        Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
        DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
        GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GRU HardSigmoid
        Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN
        LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mul Neg NonMaxSuppression Not Or Pad
        ParametricSoftplus Pow PRelu QuantizeLinear RandomUniform RandomUniformLike Range ReduceL1 ReduceL2
        ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
        Reshape Resize ReverseSequence RNN Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape
        Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
        Tanh ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample Where Xor"""
    ),
    unsupported=_ops(
        """BitShift Compress ConcatFromSequence ConvInteger Det DynamicQuantizeLinear Hardmax IsInf MatMulInteger
        MaxRoiPool MaxUnpool MeanVarianceNormalization Mod Multinomial NegativeLogLikelihoodLoss NonZero OneHot
        QLinearConv QLinearMatMul RandomNormal RandomNormalLike Reciprocal RoiAlign SequenceAt SequenceConstruct
        SequenceEmpty SequenceErase SequenceInsert SequenceLength Shrink SoftmaxCrossEntropyLoss SplitToSequence
        StringNormalizer TfIdfVectorizer Unique"""
    ),
)

TABLES: tuple[OpTable, ...] = (_TRT_8_4, _TRT_10_15)


def table_for(major: int) -> OpTable | None:
    """The documented table to judge TensorRT `major`.x with (11.x is judged by the 10.15 table)."""
    if major == 8:
        return _TRT_8_4
    if major in (10, 11):
        return _TRT_10_15
    return None
