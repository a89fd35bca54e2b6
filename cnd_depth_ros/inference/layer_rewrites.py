"""Layer rewrites for inference: each swaps a layer for one that computes the same function
faster, verified by the parity tests (test/test_layer_rewrites.py) and applied by the ONNX export.

* stride-1 ``ConvTranspose2d`` layers become ordinary ``Conv2d`` layers (flipped, transposed
  kernels: the same function, and faster in every runtime);
* a spatial ``Conv2d`` to a single channel (the decoder's last layer) becomes a depthwise conv
  and a 1x1 sum over the channels: the same function, and a depthwise kernel instead of the
  one-row matrix product over an im2col buffer that ONNX Runtime ran it as (14x faster there);
* at a fixed input size, a ``Conv2d`` loses the kernel taps that only ever read its zero padding:
  at 256x160 the ASPP sees a 16x10 map, where the rate-18 branch's 3x3 kernel reads nothing but
  its centre and the rate-12 branch's only its middle row (the degeneration DeepLabv3 describes,
  Chen et al., 2017, Sec. 3.3). The trimmed conv is the same function at that size only, which
  is why it is an export-time rewrite (static shapes) and not a model change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "conv_transpose_as_conv",
    "conv_without_dead_taps",
    "replace_conv_transposes",
    "replace_convs_with_dead_taps",
    "replace_single_output_convs",
    "single_output_conv_as_depthwise",
]


def conv_transpose_as_conv(layer: nn.ConvTranspose2d) -> nn.Conv2d | None:
    """The ``Conv2d`` computing exactly what a stride-1 ``layer`` computes, or ``None`` when
    ``layer`` has no such twin (stride > 1, output padding, or padding wider than the kernel).

    A stride-1 transposed convolution is a correlation with the kernel flipped in space and its
    input/output channel axes swapped (per group), padded by ``dilation * (k - 1) - padding``.
    """
    if layer.stride != (1, 1) or any(layer.output_padding) or layer.padding_mode != "zeros":
        return None
    if isinstance(layer.padding, str):
        return None
    (kh, kw), (ph, pw), (dh, dw) = layer.kernel_size, layer.padding, layer.dilation
    kernel, dilation = (kh, kw), (dh, dw)
    padding = (dh * (kh - 1) - ph, dw * (kw - 1) - pw)
    if min(padding) < 0:
        return None
    groups = layer.groups
    in_channels, out_per_group = layer.weight.shape[:2]
    conv = nn.Conv2d(
        in_channels,
        out_per_group * groups,
        kernel,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=layer.bias is not None,
    ).to(layer.weight.device, layer.weight.dtype)
    with torch.no_grad():
        weight = layer.weight.reshape(groups, in_channels // groups, out_per_group, *kernel)
        weight = weight.transpose(1, 2).reshape(
            out_per_group * groups, in_channels // groups, *kernel
        )
        conv.weight.copy_(weight.flip(-2, -1))
        if layer.bias is not None and conv.bias is not None:
            conv.bias.copy_(layer.bias)
    return conv


def single_output_conv_as_depthwise(layer: nn.Conv2d) -> nn.Sequential | None:
    """The depthwise conv + 1x1 channel sum computing exactly what ``layer`` computes, or
    ``None`` unless ``layer`` is a dense spatial conv to one channel."""
    if layer.out_channels != 1 or layer.groups != 1 or layer.kernel_size == (1, 1):
        return None
    channels = layer.in_channels
    depthwise = nn.Conv2d(
        channels, channels, layer.kernel_size, stride=layer.stride, padding=layer.padding,
        dilation=layer.dilation, groups=channels, bias=False, padding_mode=layer.padding_mode,
    ).to(layer.weight.device, layer.weight.dtype)
    channel_sum = nn.Conv2d(channels, 1, 1, bias=layer.bias is not None).to(
        layer.weight.device, layer.weight.dtype
    )
    with torch.no_grad():
        depthwise.weight.copy_(layer.weight.transpose(0, 1))
        channel_sum.weight.fill_(1.0)
        if layer.bias is not None and channel_sum.bias is not None:
            channel_sum.bias.copy_(layer.bias)
    return nn.Sequential(depthwise, channel_sum)


def _replace_layers(
    model: nn.Module, kind: type[nn.Module], twin: Callable[[Any], nn.Module | None]
) -> int:
    """Swap every ``kind`` child of ``model`` (in place) for ``twin(child)`` where that is not
    ``None``; returns how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is kind and (replacement := twin(child)) is not None:
                setattr(parent, child_name, replacement)
                swapped += 1
    return swapped


def replace_conv_transposes(model: nn.Module) -> int:
    """Swap every stride-1 ``ConvTranspose2d`` in ``model`` (in place) for its ``Conv2d`` twin;
    returns how many were swapped."""
    return _replace_layers(model, nn.ConvTranspose2d, conv_transpose_as_conv)


def replace_single_output_convs(model: nn.Module) -> int:
    """Swap every dense spatial ``Conv2d`` to one channel in ``model`` (in place) for its
    depthwise twin; returns how many were swapped."""
    return _replace_layers(model, nn.Conv2d, single_output_conv_as_depthwise)


def _live_taps(size: int, kernel: int, stride: int, padding: int, dilation: int) -> range:
    """The kernel taps, along one axis, that read the input (not its padding) for at least one
    output position; always a contiguous range."""
    outputs = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    live = [
        tap
        for tap in range(kernel)
        if any(0 <= out * stride + tap * dilation - padding < size for out in range(outputs))
    ]
    return range(live[0], live[-1] + 1) if live else range(0)


def conv_without_dead_taps(layer: nn.Conv2d, input_size: Sequence[int]) -> nn.Conv2d | None:
    """The smaller ``Conv2d`` computing exactly what ``layer`` computes on inputs of spatial size
    ``input_size`` (height, width), without the kernel taps that only read zero padding; ``None``
    when every tap is live, or when the live taps are off-centre (torch pads symmetrically)."""
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return None
    taps, paddings = [], []
    for axis in range(2):
        kernel, stride = layer.kernel_size[axis], layer.stride[axis]
        padding, dilation = layer.padding[axis], layer.dilation[axis]
        live = _live_taps(input_size[axis], kernel, stride, padding, dilation)
        if not live or live.start + live.stop != kernel:  # dead everywhere, or asymmetric
            return None
        if live.start * dilation > padding:  # would need a negative padding
            return None
        taps.append(live)
        paddings.append(padding - live.start * dilation)
    if [len(live) for live in taps] == list(layer.kernel_size):
        return None
    conv = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        (len(taps[0]), len(taps[1])),
        stride=layer.stride,
        padding=(paddings[0], paddings[1]),
        dilation=layer.dilation,
        groups=layer.groups,
        bias=layer.bias is not None,
    ).to(layer.weight.device, layer.weight.dtype)
    rows, columns = (slice(live.start, live.stop) for live in taps)
    with torch.no_grad():
        conv.weight.copy_(layer.weight[:, :, rows, columns])
        if layer.bias is not None and conv.bias is not None:
            conv.bias.copy_(layer.bias)
    return conv


def replace_convs_with_dead_taps(model: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """Swap every ``Conv2d`` of ``model`` (in place) that has dead taps on ``inputs`` for its
    trimmed twin (:func:`conv_without_dead_taps`); returns how many were swapped. The model is
    only right for inputs of that size afterwards."""
    sizes: dict[nn.Module, tuple[int, int]] = {}

    def record(layer: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        sizes[layer] = (args[0].shape[-2], args[0].shape[-1])

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if type(m) is nn.Conv2d]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()

    def trimmed(layer: nn.Conv2d) -> nn.Conv2d | None:
        # A conv the forward pass did not reach has no known input size: it stays as it is.
        return conv_without_dead_taps(layer, sizes[layer]) if layer in sizes else None

    return _replace_layers(model, nn.Conv2d, trimmed)
