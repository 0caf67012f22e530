"""Make foreign ONNX graphs convertible by onnx2torch, with onnxruntime's numbers.

onnx2torch 1.5.15 knows operators up to about opset 17, and a few of the ones it knows give
numbers that differ from onnxruntime (it only warns, or not even that). This module

* adds converters for newer operator versions. Where a new version only widened the type
  list, onnx2torch's own converter is registered again under the new version; where the
  semantics changed (Resize-18/19, Pad-18, Reduce*-18, Split-18, ...) a small nn.Module
  implements the new signature;
* replaces the converters that are wrong or refuse common input: Resize (only
  half_pixel/align_corners linear and cubic with a = -0.75 were right; Resize-10 linear was
  half_pixel), DepthToSpace (no DCR), PRelu (a [K] slope taken as per-channel when K equals
  the channel count), Reshape (refused allowzero=1, which torch's dynamo exporter always
  sets), LayerNormalization (normalized_shape read from inferred shapes: 0 for dynamic
  dims), Slice (indexed with a list of slices, which torch deprecates);
* repairs graph quirks before conversion (`prepare_graph`): Identity-wrapped shared
  initializers of the legacy exporter, weights held by Constant nodes, SAME auto_pad.

The registry is onnx2torch's module-level dict, so registration is global and idempotent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import onnx
import onnx.inliner
import torch
import torch.nn.functional as F
from onnx import defs, numpy_helper
from onnx2torch import convert as _onnx2torch_convert
from onnx2torch.node_converters import registry
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxMapping,
    OnnxToTorchModule,
    OperationConverterResult,
    get_const_value,
    onnx_mapping_from_node,
)
from torch import nn

from sreval.errors import ModelError, UnsupportedOperatorError

__all__ = ["prepare_graph", "register_converters", "to_torch", "unsupported_ops"]

Converter = Callable[[OnnxNode, OnnxGraph], OperationConverterResult]

_ONNX_DOMAINS = ("", "ai.onnx")


# =============================================================================== Resize


@dataclass(frozen=True)
class ResizeSpec:
    """The attributes of one Resize/Upsample node, with ONNX defaults."""

    mode: str = "nearest"
    coordinate_mode: str = "half_pixel"
    # "simple" is Resize-10/Upsample: truncate when upsampling, ceil when downsampling.
    nearest_mode: str = "round_prefer_floor"
    cubic_a: float = -0.75
    exclude_outside: bool = False
    extrapolation_value: float = 0.0
    antialias: bool = False
    axes: tuple[int, ...] | None = None
    aspect_policy: str = "stretch"


_COORDINATE_MODES = (
    "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
    "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize",
)
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


def _check_resize_spec(spec: ResizeSpec) -> None:
    """Refuse at conversion time what the module cannot compute (onnx2torch only warned)."""
    if spec.mode not in ("nearest", "linear", "cubic"):
        raise NotImplementedError(f'Resize mode "{spec.mode}" is not supported')
    if spec.coordinate_mode not in _COORDINATE_MODES:
        raise NotImplementedError(f'Resize coordinate_transformation_mode "{spec.coordinate_mode}" is not supported')
    if spec.mode == "nearest" and spec.nearest_mode not in _NEAREST_MODES:
        raise NotImplementedError(f'Resize nearest_mode "{spec.nearest_mode}" is not supported')
    if spec.mode == "nearest" and spec.antialias:
        raise NotImplementedError("Resize antialias is only defined for linear and cubic modes")
    if spec.aspect_policy not in ("stretch", "not_larger", "not_smaller"):
        raise NotImplementedError(f'Resize keep_aspect_ratio_policy "{spec.aspect_policy}" is not supported')


@dataclass(frozen=True)
class _AxisPlan:
    axis: int
    in_len: int
    out_len: int
    scale: float
    roi: tuple[float, float]
    from_sizes: bool  # scale = out/in (torch's own mapping) rather than a given factor


def _cubic_kernel(d: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel with coefficient a (ONNX cubic_coeff_a)."""
    d = d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((d - 5) * d + 8) * d * a - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def _linear_kernel(d: torch.Tensor) -> torch.Tensor:
    return (1 - d.abs()).clamp(min=0)


class OnnxResizeExact(nn.Module, OnnxToTorchModule):
    """ONNX Resize (opsets 10-19) and Upsample, matching onnxruntime for every mode.

    Resizing is separable, so each resized axis is handled alone: nearest gathers source
    indices; linear and cubic multiply by an (out x in) interpolation matrix built from the
    ONNX coordinate formulas. Index/weight tables depend only on sizes, so they are cached.
    Common cases whose semantics equal torch's own kernels go to F.interpolate (faster).
    """

    _CACHE_LIMIT = 64

    def __init__(self, spec: ResizeSpec):
        super().__init__()
        self.spec = spec
        self._tables: dict[tuple[object, ...], tuple[torch.Tensor, torch.Tensor | None]] = {}

    def forward(  # pylint: disable=missing-function-docstring
        self,
        input_tensor: torch.Tensor,
        roi: torch.Tensor | None = None,
        scales: torch.Tensor | None = None,
        sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        plans = self._plan(tuple(input_tensor.shape), roi, scales, sizes)
        fast = self._torch_interpolate(input_tensor, plans)
        if fast is not None:
            return fast
        result = input_tensor
        for plan in plans:
            result = self._resize_axis(result, plan)
        return result

    # ------------------------------------------------------------------ planning

    def _plan(
        self,
        shape: tuple[int, ...],
        roi: torch.Tensor | None,
        scales: torch.Tensor | None,
        sizes: torch.Tensor | None,
    ) -> list[_AxisPlan]:
        rank = len(shape)
        axes = [a % rank for a in self.spec.axes] if self.spec.axes else list(range(rank))
        out_lens, scale_list = self._targets(shape, axes, scales, sizes)
        rois = self._rois(rank, axes, roi)
        from_sizes = sizes is not None and sizes.numel() > 0 and self.spec.aspect_policy == "stretch"
        plans = []
        for axis in range(rank):
            plan = _AxisPlan(axis, shape[axis], out_lens[axis], scale_list[axis], rois[axis], from_sizes)
            if not self._is_identity(plan):
                plans.append(plan)
        return plans

    def _targets(
        self,
        shape: tuple[int, ...],
        axes: list[int],
        scales: torch.Tensor | None,
        sizes: torch.Tensor | None,
    ) -> tuple[list[int], list[float]]:
        out_lens, scale_list = list(shape), [1.0] * len(shape)
        if sizes is not None and sizes.numel() > 0:
            values = [int(v) for v in sizes.tolist()]
            _expect_len("sizes", values, len(axes))
            for axis, value in zip(axes, values):
                out_lens[axis] = value
                # float32 as in onnxruntime, so coordinates match to the last bit
                scale_list[axis] = float(np.float32(value) / np.float32(shape[axis]))
            if self.spec.aspect_policy != "stretch":
                pick = min if self.spec.aspect_policy == "not_larger" else max
                common = pick(scale_list[a] for a in axes)
                for axis in axes:
                    scale_list[axis] = common
                    out_lens[axis] = int(math.floor(common * shape[axis] + 0.5))
        elif scales is not None and scales.numel() > 0:
            values = [float(v) for v in scales.tolist()]
            _expect_len("scales", values, len(axes))
            for axis, value in zip(axes, values):
                scale_list[axis] = value
                out_lens[axis] = int(np.float32(value) * np.float32(shape[axis]))
        else:
            raise ValueError("Resize needs a non-empty scales or sizes input")
        return out_lens, scale_list

    def _rois(self, rank: int, axes: list[int], roi: torch.Tensor | None) -> list[tuple[float, float]]:
        rois = [(0.0, 1.0)] * rank
        # roi only means something for tf_crop_and_resize; other modes ignore it (as ORT does).
        if self.spec.coordinate_mode != "tf_crop_and_resize" or roi is None or roi.numel() == 0:
            return rois
        values = [float(v) for v in roi.tolist()]
        _expect_len("roi", values, 2 * len(axes))
        for i, axis in enumerate(axes):
            rois[axis] = (values[i], values[len(axes) + i])
        return rois

    def _is_identity(self, plan: _AxisPlan) -> bool:
        same_size = plan.out_len == plan.in_len and plan.scale == 1.0
        return same_size and plan.roi == (0.0, 1.0)

    # ------------------------------------------------------------------ fast path

    def _torch_interpolate(self, x: torch.Tensor, plans: list[_AxisPlan]) -> torch.Tensor | None:
        """F.interpolate where its semantics are exactly ONNX's; None otherwise."""
        spec = self.spec
        if spec.mode == "nearest" or x.dim() != 4 or not plans:
            return None
        if any(p.axis < 2 for p in plans) or (spec.antialias and any(p.scale < 1 for p in plans)):
            return None
        if spec.mode == "cubic" and (spec.cubic_a != -0.75 or spec.exclude_outside):
            return None
        ctm = spec.coordinate_mode
        if ctm == "pytorch_half_pixel" and all(p.out_len > 1 for p in plans):
            ctm = "half_pixel"
        # torch maps coordinates with in/out; ONNX with 1/scale: equal if out == in * scale.
        exact = all(p.from_sizes or p.out_len == p.scale * p.in_len for p in plans)
        if ctm == "half_pixel_symmetric" and exact:
            ctm = "half_pixel"  # they differ only by a shift of (out - in * scale)
        if ctm not in ("half_pixel", "align_corners") or (ctm == "half_pixel" and not exact):
            return None
        size = (x.shape[2], x.shape[3])
        for plan in plans:
            size = (plan.out_len, size[1]) if plan.axis == 2 else (size[0], plan.out_len)
        torch_mode = "bilinear" if spec.mode == "linear" else "bicubic"
        return F.interpolate(x, size=size, mode=torch_mode, align_corners=ctm == "align_corners")

    # ------------------------------------------------------------------ general path

    def _resize_axis(self, x: torch.Tensor, plan: _AxisPlan) -> torch.Tensor:
        table, outside = self._table(plan, x.device, x.dtype)
        if self.spec.mode == "nearest":
            result = x.index_select(plan.axis, table)
        else:
            result = torch.movedim(torch.movedim(x, plan.axis, -1) @ table.t(), -1, plan.axis)
        if outside is not None:
            shape = [1] * x.dim()
            shape[plan.axis] = plan.out_len
            fill = torch.full((), self.spec.extrapolation_value, dtype=x.dtype, device=x.device)
            result = torch.where(outside.view(shape), fill, result)
        return result

    def _table(
        self, plan: _AxisPlan, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = (plan.in_len, plan.out_len, plan.scale, plan.roi, str(device), dtype)
        if key not in self._tables:
            if len(self._tables) >= self._CACHE_LIMIT:
                self._tables.clear()
            coords = self._source_coords(plan)
            if self.spec.mode == "nearest":
                table = self._nearest_indices(coords, plan).to(device)
            else:
                table = self._weight_matrix(coords, plan).to(device=device, dtype=dtype)
            outside = None
            if self.spec.coordinate_mode == "tf_crop_and_resize":
                outside = ((coords < 0) | (coords > plan.in_len - 1)).to(device)
            self._tables[key] = (table, outside)
        return self._tables[key]

    def _source_coords(self, plan: _AxisPlan) -> torch.Tensor:
        """x_original for every output index.

        Precision and operation order follow onnxruntime (float32, double where it uses
        double): nearest rounding and floor() at exact ties depend on the last bit.
        """
        x = torch.arange(plan.out_len, dtype=torch.float32)
        f32 = np.float32
        n_in, n_out, scale = f32(plan.in_len), f32(plan.out_len), f32(plan.scale)
        mode = self.spec.coordinate_mode
        if mode in ("half_pixel", "pytorch_half_pixel"):
            if mode == "pytorch_half_pixel" and plan.out_len == 1:
                return torch.zeros_like(x)
            return (x + 0.5) / float(scale) - 0.5
        if mode == "half_pixel_symmetric":
            adjustment = n_out / (scale * n_in)
            offset = float((n_in / f32(2)) * (f32(1) - adjustment))
            return (offset + (x.double() + 0.5) / float(scale) - 0.5).float()
        if mode == "align_corners":
            return x * float(n_in - 1) / float(n_out - 1) if plan.out_len > 1 else torch.zeros_like(x)
        if mode == "asymmetric":
            return x / float(scale)
        if mode == "tf_half_pixel_for_nn":
            return (x + 0.5) / float(scale)
        start, end = f32(plan.roi[0]), f32(plan.roi[1])  # tf_crop_and_resize
        if plan.out_len > 1:
            return float(start * (n_in - 1)) + x * float(end - start) * float(n_in - 1) / float(n_out - 1)
        return torch.full_like(x, float(0.5 * (float(start) + float(end)) * float(n_in - 1)))

    def _nearest_indices(self, coords: torch.Tensor, plan: _AxisPlan) -> torch.Tensor:
        mode = self.spec.nearest_mode
        if mode == "simple":
            mode = "ceil" if plan.scale < 1 else "floor"
        if mode == "round_prefer_floor":
            index = torch.ceil(coords - 0.5)  # ties (x.5) go down
        elif mode == "round_prefer_ceil":
            index = torch.floor(coords + 0.5)  # ties go up
        elif mode == "floor":
            index = torch.floor(coords)
        else:
            index = torch.ceil(coords)
        return index.long().clamp(0, plan.in_len - 1)

    def _weight_matrix(self, coords: torch.Tensor, plan: _AxisPlan) -> torch.Tensor:
        """(out x in) weights: kernel taps around each source coordinate, edge-clamped.

        Antialiasing (downscaling only) stretches the kernel by 1/scale, as onnxruntime does;
        exclude_outside drops taps outside the input and renormalises the rest.
        """
        spec = self.spec
        stretch = plan.scale if spec.antialias and plan.scale < 1 else 1.0
        radius = (1.0 if spec.mode == "linear" else 2.0) / stretch
        reach = math.ceil(radius)
        centre = coords.double()
        taps = torch.floor(centre)[:, None] + torch.arange(-reach, reach + 2, dtype=torch.float64)[None, :]
        distance = (taps - centre[:, None]) * stretch
        if spec.mode == "linear":
            weights = _linear_kernel(distance)
        else:
            weights = _cubic_kernel(distance, spec.cubic_a)
        if spec.exclude_outside:
            weights = weights * ((taps >= 0) & (taps <= plan.in_len - 1))
        total = weights.sum(dim=1, keepdim=True)
        weights = weights / torch.where(total == 0, torch.ones_like(total), total)
        index = taps.long().clamp(0, plan.in_len - 1)
        matrix = torch.zeros(plan.out_len, plan.in_len, dtype=torch.float64)
        return matrix.scatter_add_(1, index, weights)


def _expect_len(name: str, values: Sequence[object], expected: int) -> None:
    if len(values) != expected:
        raise ValueError(f"Resize {name} has {len(values)} values, expected {expected}")


class _ScalesOnlyResize(nn.Module, OnnxToTorchModule):
    """Resize-10 and Upsample-9/10: inputs (X, scales)."""

    def __init__(self, spec: ResizeSpec):
        super().__init__()
        self.resize = OnnxResizeExact(spec)

    def forward(self, input_tensor: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.resize(input_tensor, scales=scales)


class _FixedScalesResize(nn.Module, OnnxToTorchModule):
    """Upsample-7: scales is an attribute."""

    def __init__(self, spec: ResizeSpec, scales: Sequence[float]):
        super().__init__()
        self.resize = OnnxResizeExact(spec)
        self.scales = tuple(float(s) for s in scales)

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.resize(input_tensor, scales=torch.tensor(self.scales))


def _resize_spec(node: OnnxNode) -> ResizeSpec:
    attrs = node.attributes
    axes = attrs.get("axes")
    spec = ResizeSpec(
        mode=attrs.get("mode", "nearest"),
        coordinate_mode=attrs.get("coordinate_transformation_mode", "half_pixel"),
        nearest_mode=attrs.get("nearest_mode", "round_prefer_floor"),
        cubic_a=float(attrs.get("cubic_coeff_a", -0.75)),
        exclude_outside=bool(attrs.get("exclude_outside", 0)),
        extrapolation_value=float(attrs.get("extrapolation_value", 0.0)),
        antialias=bool(attrs.get("antialias", 0)),
        axes=tuple(axes) if axes else None,
        aspect_policy=attrs.get("keep_aspect_ratio_policy", "stretch"),
    )
    _check_resize_spec(spec)
    return spec


def _legacy_resize_spec(node: OnnxNode) -> ResizeSpec:
    """Resize-10 and Upsample: asymmetric coordinates, 'simple' nearest rounding."""
    mode = node.attributes.get("mode", "nearest")
    if mode == "bilinear":  # Upsample-7 spelling in some old exports
        mode = "linear"
    spec = ResizeSpec(mode=mode, coordinate_mode="asymmetric", nearest_mode="simple")
    _check_resize_spec(spec)
    return spec


def _convert_resize(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(OnnxResizeExact(_resize_spec(node)), onnx_mapping_from_node(node))


def _convert_resize_scales_only(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(_ScalesOnlyResize(_legacy_resize_spec(node)), onnx_mapping_from_node(node))


def _convert_upsample_7(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    module = _FixedScalesResize(_legacy_resize_spec(node), node.attributes["scales"])
    return OperationConverterResult(module, onnx_mapping_from_node(node))


# ====================================================================== depth <-> space


class OnnxDepthToSpaceExact(nn.Module, OnnxToTorchModule):
    """DepthToSpace in both modes: CRD is torch's pixel_shuffle; DCR (TensorFlow) is not."""

    def __init__(self, blocksize: int, mode: str):
        super().__init__()
        self.blocksize = blocksize
        self.mode = mode

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        b = self.blocksize
        if self.mode == "CRD":
            return F.pixel_shuffle(input_tensor, b)
        n, c, h, w = input_tensor.shape
        # DCR: the channel index is (row offset, column offset, depth), depth fastest.
        blocks = input_tensor.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        return blocks.reshape(n, c // (b * b), h * b, w * b)


class OnnxSpaceToDepth(nn.Module, OnnxToTorchModule):
    """SpaceToDepth: channel index (row offset, column offset, depth); pixel_unshuffle differs."""

    def __init__(self, blocksize: int):
        super().__init__()
        self.blocksize = blocksize

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        b = self.blocksize
        n, c, h, w = input_tensor.shape
        blocks = input_tensor.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return blocks.reshape(n, c * b * b, h // b, w // b)


def _convert_depth_to_space(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    mode = node.attributes.get("mode", "DCR")  # DepthToSpace-1 has no mode: it is DCR
    if mode not in ("DCR", "CRD"):
        raise NotImplementedError(f'DepthToSpace mode "{mode}" is not supported')
    module = OnnxDepthToSpaceExact(int(node.attributes["blocksize"]), mode)
    return OperationConverterResult(module, onnx_mapping_from_node(node))


def _convert_space_to_depth(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    module = OnnxSpaceToDepth(int(node.attributes["blocksize"]))
    return OperationConverterResult(module, onnx_mapping_from_node(node))


# ================================================================================= Pad


class OnnxPadExact(nn.Module, OnnxToTorchModule):
    """Pad-11..25: pads (and optional axes) as inputs; modes constant/reflect/edge/wrap.

    Non-constant modes index each padded axis with reflected/clamped/wrapped positions, which
    works on any axis and rank (F.pad only pads the last dims) and also crops for negative pads.
    """

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(  # noqa: D102
        self,
        input_tensor: torch.Tensor,
        pads: torch.Tensor,
        constant_value: torch.Tensor | None = None,
        axes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rank = input_tensor.dim()
        axis_list = [a % rank for a in axes.tolist()] if axes is not None else list(range(rank))
        pad_list = [int(p) for p in pads.tolist()]
        if len(pad_list) != 2 * len(axis_list):
            raise ValueError(f"Pad got {len(pad_list)} pads for {len(axis_list)} axes")
        begins, ends = pad_list[: len(axis_list)], pad_list[len(axis_list):]
        if self.mode == "constant":
            value = 0.0
            if constant_value is not None and constant_value.numel() > 0:
                value = constant_value.item()
            return _pad_constant(input_tensor, dict(zip(axis_list, zip(begins, ends))), value)
        result = input_tensor
        for axis, begin, end in zip(axis_list, begins, ends):
            if begin or end:
                result = _pad_by_index(result, axis, begin, end, self.mode)
        return result


def _pad_constant(x: torch.Tensor, per_axis: dict[int, tuple[int, int]], value: float) -> torch.Tensor:
    torch_pads: list[int] = []
    for axis in reversed(range(x.dim())):  # F.pad lists the last axis first
        torch_pads.extend(per_axis.get(axis, (0, 0)))
    return F.pad(x, torch_pads, mode="constant", value=value)


def _pad_by_index(x: torch.Tensor, axis: int, begin: int, end: int, mode: str) -> torch.Tensor:
    length = x.shape[axis]
    positions = torch.arange(-begin, length + end, device=x.device)
    if mode == "edge":
        index = positions.clamp(0, length - 1)
    elif mode == "wrap":
        index = positions.remainder(length)
    elif length == 1:  # reflect of a single element repeats it
        index = torch.zeros_like(positions)
    else:
        period = 2 * (length - 1)
        folded = positions.remainder(period)
        index = torch.where(folded >= length, period - folded, folded)
    return x.index_select(axis, index)


def _convert_pad(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    mode = node.attributes.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise NotImplementedError(f'Pad mode "{mode}" is not supported')
    return OperationConverterResult(OnnxPadExact(mode), onnx_mapping_from_node(node))


# ============================================================================== Reduce


def _reduce_prod(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    for dim in sorted(dims, reverse=True):  # highest first so lower indices stay valid
        x = torch.prod(x, dim=dim, keepdim=keepdim)
    return x


_REDUCERS: dict[str, Callable[[torch.Tensor, list[int], bool], torch.Tensor]] = {
    "ReduceMean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: torch.sum(x, dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "ReduceProd": _reduce_prod,
    "ReduceL1": lambda x, d, k: torch.sum(x.abs(), dim=d, keepdim=k),
    # vector_norm has a zero subgradient at 0 where sqrt(sum(x^2)) would give NaN
    "ReduceL2": lambda x, d, k: torch.linalg.vector_norm(x, ord=2, dim=d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, dim=d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
}


class OnnxReduceExact(nn.Module, OnnxToTorchModule):
    """Reduce*-18+: axes is an optional input; empty axes reduce all, or nothing with noop."""

    def __init__(self, operation: str, keepdims: bool, noop_with_empty_axes: bool, axes: list[int] | None):
        super().__init__()
        self.operation = operation
        self.keepdims = keepdims
        self.noop_with_empty_axes = noop_with_empty_axes
        self.axes = axes  # known at conversion time (constant input), else read per call

    def forward(self, input_tensor: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        dims = self.axes
        if dims is None:
            dims = [int(a) for a in axes.tolist()] if axes is not None else []
        if not dims:
            if self.noop_with_empty_axes:
                return input_tensor
            dims = list(range(input_tensor.dim()))
        rank = max(input_tensor.dim(), 1)
        dims = sorted({d % rank for d in dims})
        return _REDUCERS[self.operation](input_tensor, dims, self.keepdims)


def _constant_ints(name: str, graph: OnnxGraph) -> list[int] | None:
    """The value of an initializer/Constant input as ints; None if computed at run time."""
    try:
        value = get_const_value(name, graph)
    except KeyError:
        return None
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _convert_reduce(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    keepdims = bool(node.attributes.get("keepdims", 1))
    noop = bool(node.attributes.get("noop_with_empty_axes", 0))
    has_axes = len(node.input_values) > 1 and node.input_values[1] != ""
    axes = _constant_ints(node.input_values[1], graph) if has_axes else []
    module = OnnxReduceExact(node.operation_type, keepdims, noop, axes)
    if axes is None:  # runtime axes: keep the second input
        return OperationConverterResult(module, onnx_mapping_from_node(node))
    mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
    return OperationConverterResult(module, mapping)


# =============================================================================== Split


class OnnxSplitExact(nn.Module, OnnxToTorchModule):
    """Split-18: sizes from the 'split' input, or num_outputs chunks (the last one smaller)."""

    def __init__(self, axis: int, num_outputs: int, split: list[int] | None):
        super().__init__()
        self.axis = axis
        self.num_outputs = num_outputs
        self.split = split

    def forward(  # noqa: D102
        self, input_tensor: torch.Tensor, split: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        sizes = self.split
        if sizes is None and split is not None and split.numel() > 0:
            sizes = [int(s) for s in split.tolist()]
        if sizes is None:
            length = input_tensor.shape[self.axis]
            chunk = -(-length // self.num_outputs)
            sizes = [max(0, min(chunk, length - i * chunk)) for i in range(self.num_outputs)]
        parts = torch.split(input_tensor, sizes, dim=self.axis)
        # onnx2torch indexes the result only for multi-output nodes
        return parts[0] if self.num_outputs == 1 else tuple(parts)


def _convert_split(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    axis = int(node.attributes.get("axis", 0))
    num_outputs = len(node.output_values)
    has_split = len(node.input_values) > 1 and node.input_values[1] != ""
    split = _constant_ints(node.input_values[1], graph) if has_split else None
    module = OnnxSplitExact(axis, num_outputs, split)
    if has_split and split is None:
        return OperationConverterResult(module, onnx_mapping_from_node(node))
    mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
    return OperationConverterResult(module, mapping)


# ========================================================================== small ops


class OnnxPReluExact(nn.Module, OnnxToTorchModule):
    """PRelu with ONNX broadcasting (a slope of shape [K] applies to the LAST axis)."""

    def forward(self, input_tensor: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:  # noqa: D102
        rank = input_tensor.dim()
        per_channel = rank >= 2 and slope.dim() == rank - 1 and slope.shape[0] == input_tensor.shape[1]
        if slope.numel() == 1 or (per_channel and all(s == 1 for s in slope.shape[1:])):
            return F.prelu(input_tensor, slope.reshape(-1))  # fast, and the common case
        return torch.where(input_tensor >= 0, input_tensor, input_tensor * slope)


def _slice(
    x: torch.Tensor, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None, steps: Sequence[int] | None
) -> torch.Tensor:
    """ONNX Slice. Python's slice.indices clamps exactly as ONNX does, negative steps included."""
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = list(steps) if steps is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    reversed_axes: list[tuple[int, range]] = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        first, stop, stride = slice(int(start), int(end), int(step)).indices(x.shape[axis])
        if stride > 0:
            index[axis] = slice(first, stop, stride)
        else:  # torch tensors have no negative strides: gather instead
            reversed_axes.append((axis, range(first, stop, stride)))
    result = x[tuple(index)]
    for axis, positions in reversed_axes:
        result = result.index_select(axis, torch.tensor(positions, dtype=torch.long, device=x.device))
    return result


class OnnxSliceExact(nn.Module, OnnxToTorchModule):
    """Slice-10+: starts/ends/axes/steps are inputs (onnx2torch indexed with a list of slices,
    which torch deprecates)."""

    def forward(  # noqa: D102
        self,
        input_tensor: torch.Tensor,
        starts: torch.Tensor,
        ends: torch.Tensor,
        axes: torch.Tensor | None = None,
        steps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return _slice(
            input_tensor,
            starts.tolist(),
            ends.tolist(),
            axes.tolist() if axes is not None else None,
            steps.tolist() if steps is not None else None,
        )


class OnnxSliceV1(nn.Module, OnnxToTorchModule):
    """Slice-1: starts/ends/axes are attributes (opset <= 9)."""

    def __init__(self, starts: list[int], ends: list[int], axes: list[int] | None):
        super().__init__()
        self.starts, self.ends, self.axes = starts, ends, axes

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return _slice(input_tensor, self.starts, self.ends, self.axes, None)


class OnnxGlobalMaxPool(nn.Module, OnnxToTorchModule):
    """GlobalMaxPool: max over all spatial axes, kept as size-1 dims."""

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.amax(input_tensor, dim=tuple(range(2, input_tensor.dim())), keepdim=True)


class OnnxReshapeExact(nn.Module, OnnxToTorchModule):
    """Reshape-14+: with allowzero=1 (torch's dynamo exporter sets it) a 0 means size 0."""

    def __init__(self, allowzero: bool):
        super().__init__()
        self.allowzero = allowzero

    def forward(self, input_tensor: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:  # noqa: D102
        dims = [int(d) for d in shape.tolist()]
        if not self.allowzero:  # 0 copies the input's size at that position
            dims = [input_tensor.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return torch.reshape(input_tensor, dims)


def _convert_reshape(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    module = OnnxReshapeExact(bool(node.attributes.get("allowzero", 0)))
    return OperationConverterResult(module, onnx_mapping_from_node(node))


class OnnxLayerNormExact(nn.Module, OnnxToTorchModule):
    """LayerNormalization over axes [axis, rank) with scale/bias given as inputs."""

    def __init__(self, axis: int, epsilon: float):
        super().__init__()
        self.axis = axis
        self.epsilon = epsilon

    def forward(  # noqa: D102
        self, input_tensor: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        shape = input_tensor.shape[self.axis:]
        if scale.shape == shape and (bias is None or bias.shape == shape):
            return F.layer_norm(input_tensor, shape, scale, bias, self.epsilon)
        normed = F.layer_norm(input_tensor, shape, eps=self.epsilon) * scale  # broadcasting scale
        return normed if bias is None else normed + bias


def _convert_layer_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """onnx2torch took normalized_shape from inferred shapes, which are 0 for dynamic dims."""
    if any(node.output_values[1:]):
        raise NotImplementedError("LayerNormalization with Mean/InvStdDev outputs is not supported")
    axis = int(node.attributes.get("axis", -1))
    epsilon = float(node.attributes.get("epsilon", 1e-5))
    module = _layer_norm_with_weights(node, graph, axis, epsilon)
    if module is None:  # scale/bias computed in the graph, or shapes that need broadcasting
        return OperationConverterResult(OnnxLayerNormExact(axis, epsilon), onnx_mapping_from_node(node))
    mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values[:1])
    return OperationConverterResult(module, mapping)


def _layer_norm_with_weights(node: OnnxNode, graph: OnnxGraph, axis: int, epsilon: float) -> nn.LayerNorm | None:
    """nn.LayerNorm shaped like the constant scale, when it covers exactly the normalised axes."""
    params = [name for name in node.input_values[1:] if name]
    if not all(name in graph.initializers for name in params):
        return None
    info = graph.value_info.get(node.input_values[0])
    rank = len(info.type.tensor_type.shape.dim) if info is not None else 0
    normalized_dims = -axis if axis < 0 else rank - axis
    scale = graph.initializers[params[0]].to_torch()
    bias = graph.initializers[params[1]].to_torch() if len(params) > 1 else None
    if normalized_dims <= 0 or scale.dim() != normalized_dims or (bias is not None and bias.shape != scale.shape):
        return None
    module = nn.LayerNorm(list(scale.shape), eps=epsilon, bias=bias is not None)
    with torch.no_grad():
        module.weight.copy_(scale)
        if bias is not None:
            module.bias.copy_(bias)
    return module


def _convert_prelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(OnnxPReluExact(), onnx_mapping_from_node(node))


def _convert_slice(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(OnnxSliceExact(), onnx_mapping_from_node(node))


def _convert_slice_1(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    attrs = node.attributes
    axes = attrs.get("axes")
    module = OnnxSliceV1(list(attrs["starts"]), list(attrs["ends"]), list(axes) if axes else None)
    return OperationConverterResult(module, onnx_mapping_from_node(node))


def _convert_global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(OnnxGlobalMaxPool(), onnx_mapping_from_node(node))


def _convert_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    approximate = node.attributes.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise NotImplementedError(f'Gelu approximate="{approximate}" is not supported')
    return OperationConverterResult(nn.GELU(approximate=approximate), onnx_mapping_from_node(node))


def _convert_mish(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(nn.Mish(), onnx_mapping_from_node(node))


def _convert_average_pool_19(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """AveragePool-19 added dilations; torch's avg_pool has none, so only 1 is accepted."""
    dilations = node.attributes.get("dilations")
    if dilations and any(d != 1 for d in dilations):
        raise NotImplementedError("AveragePool with dilations != 1 is not supported")
    return registry.get_converter("AveragePool", 11)(node, graph)


def _convert_batch_norm_7(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """BatchNormalization-7 is BatchNormalization-9 plus a 'spatial' flag."""
    if node.attributes.get("spatial", 1) != 1:
        raise NotImplementedError("BatchNormalization with spatial=0 is not supported")
    return registry.get_converter("BatchNormalization", 9)(node, graph)


# ======================================================================= registration

# Versions that only widened the type list (bfloat16, float8, int4, ...) or, for the old
# ones, narrowed it: onnx2torch's converter for `base` computes the same thing.
_SAME_AS: dict[str, tuple[int, tuple[int, ...]]] = {
    "Acos": (7, (22,)), "Asin": (7, (22,)), "Atan": (7, (22,)),
    "Cos": (7, (22,)), "Sin": (7, (22,)), "Tan": (7, (22,)),
    "Cast": (13, (19, 21, 23, 24, 25, 28)),
    "Celu": (12, (28,)),
    "Constant": (13, (19, 21, 23, 24, 25)),
    "ConstantOfShape": (9, (20, 21, 23, 24, 25)),
    "Conv": (11, (22,)), "ConvTranspose": (11, (22,)),
    "Dropout": (13, (22,)),
    "Einsum": (12, (28,)),
    "Elu": (6, (22,)), "HardSigmoid": (6, (22,)), "Selu": (6, (22,)),
    "HardSwish": (14, (22,)), "Softplus": (1, (22,)), "Softsign": (1, (22,)),
    "Equal": (13, (19,)), "GreaterOrEqual": (12, (16,)), "LessOrEqual": (12, (16,)),
    "EyeLike": (9, (22,)),
    "Flatten": (13, (21, 23, 24, 25)),
    "GlobalAveragePool": (1, (22,)),
    "Identity": (16, (19, 21, 23, 24, 25)),
    "InstanceNormalization": (6, (22,)),
    "IsInf": (10, (20,)), "IsNaN": (13, (20,)),
    "MaxPool": (12, (22,)),
    "Mod": (13, (28,)),
    "Range": (11, (27,)),  # stash_type only matters for float16 inputs
    "Round": (11, (22,)),
    "ScatterND": (16, (18,)),  # the new max/min reductions are refused by the old converter
    "Shape": (15, (19, 21, 23, 24, 25)),
    "Squeeze": (21, (23, 24, 25)),
    "TopK": (11, (24,)),
    "Transpose": (13, (21, 23, 24, 25)),
    "Unsqueeze": (13, (21, 23, 24, 25)),
}
# Opset <= 8 versions (old exports, opset 7-9) with the same meaning as a newer converter.
_OLD_SAME_AS: dict[str, tuple[int, tuple[int, ...]]] = {
    "Cast": (9, (6,)), "Constant": (9, (1,)), "Dropout": (10, (7,)), "Flatten": (9, (1,)),
    "Gemm": (9, (7,)), "MaxPool": (8, (1,)), "IsNaN": (13, (9,)),
    "Max": (8, (6,)), "Min": (8, (6,)), "Mean": (8, (6,)), "Sum": (8, (6,)),
}

_REDUCE_VERSIONS: dict[str, tuple[int, ...]] = {
    "ReduceMean": (18,), "ReduceL1": (18,), "ReduceL2": (18,), "ReduceProd": (18,),
    "ReduceSumSquare": (18,), "ReduceMax": (18, 20), "ReduceMin": (18, 20),
    "ReduceLogSum": (18, 28), "ReduceLogSumExp": (18, 28),
}

# Our own converters. `True`: replaces onnx2torch's (wrong or refusing) converter.
_OWN: list[tuple[str, tuple[int, ...], Converter, bool]] = [
    ("Resize", (11, 13), _convert_resize, True),  # onnx2torch: wrong numbers, only a warning
    ("Resize", (18, 19), _convert_resize, False),
    ("Resize", (10,), _convert_resize_scales_only, True),  # onnx2torch: half_pixel, not asymmetric
    ("Upsample", (9, 10), _convert_resize_scales_only, False),
    ("Upsample", (7,), _convert_upsample_7, False),
    ("DepthToSpace", (11, 13), _convert_depth_to_space, True),  # onnx2torch: CRD only
    ("DepthToSpace", (1, 28), _convert_depth_to_space, False),
    ("SpaceToDepth", (1, 13), _convert_space_to_depth, False),
    ("Pad", (18, 19, 21, 23, 24, 25), _convert_pad, False),
    ("Split", (18,), _convert_split, False),
    ("PRelu", (7, 9, 16), _convert_prelu, True),  # onnx2torch: [K] slope taken as per-channel
    ("Reshape", (14,), _convert_reshape, True),  # onnx2torch: refuses allowzero=1
    ("Reshape", (19, 21, 23, 24, 25), _convert_reshape, False),
    ("LayerNormalization", (17,), _convert_layer_norm, True),  # onnx2torch: 0-sized for dynamic dims
    ("Slice", (1,), _convert_slice_1, False),
    ("Slice", (10, 11, 13), _convert_slice, True),  # onnx2torch: list-of-slices indexing (deprecated)
    ("GlobalMaxPool", (1, 22), _convert_global_max_pool, False),
    ("Gelu", (20,), _convert_gelu, False),
    ("Mish", (18, 22), _convert_mish, False),
    ("AveragePool", (19, 22), _convert_average_pool_19, False),
    ("BatchNormalization", (7,), _convert_batch_norm_7, False),
] + [(op, versions, _convert_reduce, False) for op, versions in _REDUCE_VERSIONS.items()]

_registered = False


def _put(operation: str, version: int, converter: Converter, replace: bool) -> None:
    key = registry.OperationDescription(domain=defs.ONNX_DOMAIN, operation_type=operation, version=version)
    # add_converter() refuses keys that exist, so replacements write the (module-level) dict
    # of the pinned onnx2torch 1.5.15 directly; additions never shadow an upstream converter.
    table = registry._CONVERTER_REGISTRY  # pylint: disable=protected-access
    if replace or key not in table:
        table[key] = converter


def register_converters() -> None:
    """Add sreval's converters to onnx2torch's registry (idempotent)."""
    global _registered  # pylint: disable=global-statement
    if _registered:
        return
    for operation, versions, converter, replace in _OWN:
        for version in versions:
            _put(operation, version, converter, replace)
    for table in (_SAME_AS, _OLD_SAME_AS):
        for operation, (base, versions) in table.items():
            base_converter = registry.get_converter(operation, base)
            for version in versions:
                _put(operation, version, base_converter, False)
    _registered = True


# ====================================================================== graph repairs


def prepare_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """A repaired copy of `model` that onnx2torch can convert; `model` is left untouched.

    Inlines model-local functions, maps the 'ai.onnx' domain alias to '', turns Constant
    tensors into initializers (converters such as Conv read weights only from initializers),
    bypasses Identity nodes on initializers (the legacy exporter's shared weights,
    `KeyError: 'add_mean.weight'`) and spells out SAME auto_pad for stride-1 windows.
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    if len(fixed.functions) > 0:
        fixed = onnx.inliner.inline_local_functions(fixed)
    _normalise_domains(fixed)
    graph = fixed.graph
    _constants_to_initializers(graph)
    _bypass_initializer_identities(graph)
    _explicit_same_padding(graph)
    return fixed


def _normalise_domains(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        if node.domain == "ai.onnx":
            node.domain = ""
    opsets = {op.domain or "": op.version for op in model.opset_import}
    if "ai.onnx" in opsets:
        version = max(opsets.pop("ai.onnx"), opsets.get("", 0))
        del model.opset_import[:]
        model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in {**opsets, "": version}.items())


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    outputs = {o.name for o in graph.output}
    kept = []
    for node in graph.node:
        tensor = _constant_tensor(node) if node.op_type == "Constant" and node.domain == "" else None
        if tensor is None or node.output[0] in outputs:
            kept.append(node)
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
    _replace_nodes(graph, kept)


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a Constant node makes, for the numeric forms; None for others (strings, sparse)."""
    attr = node.attribute[0] if len(node.attribute) == 1 else None
    if attr is None:
        return None
    if attr.name == "value" and attr.t.data_type != onnx.TensorProto.STRING:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(attr.t)
        return tensor
    makers: dict[str, Callable[[onnx.AttributeProto], np.ndarray]] = {
        "value_float": lambda a: np.array(a.f, dtype=np.float32),
        "value_floats": lambda a: np.array(list(a.floats), dtype=np.float32),
        "value_int": lambda a: np.array(a.i, dtype=np.int64),
        "value_ints": lambda a: np.array(list(a.ints), dtype=np.int64),
    }
    maker = makers.get(attr.name)
    return numpy_helper.from_array(maker(attr)) if maker else None


def _bypass_initializer_identities(graph: onnx.GraphProto) -> None:
    initializers = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:  # topological order, so chains of Identity resolve in one pass
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
        is_weight_copy = node.op_type == "Identity" and node.domain == "" and node.input[0] in initializers
        if is_weight_copy and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    _replace_nodes(graph, kept)


def _explicit_same_padding(graph: onnx.GraphProto) -> None:
    """SAME_UPPER/LOWER -> explicit pads (onnx2torch refuses auto_pad SAME)."""
    weight_shapes = {t.name: list(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type in ("Conv", "MaxPool", "AveragePool") and node.domain == "":
            pads = _same_pads(node, weight_shapes)
            if pads is not None:
                kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
                del node.attribute[:]
                node.attribute.extend(kept + [onnx.helper.make_attribute("pads", pads)])


def _same_pads(node: onnx.NodeProto, weight_shapes: dict[str, list[int]]) -> list[int] | None:
    """Explicit pads for a SAME auto_pad window; None if not SAME or if they depend on the
    input size (stride > 1)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    auto_pad = attrs.get("auto_pad", b"NOTSET").decode()
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return None
    kernel = list(attrs.get("kernel_shape", []))
    if not kernel and len(node.input) > 1 and node.input[1] in weight_shapes:
        kernel = weight_shapes[node.input[1]][2:]  # Conv: from the weight's shape
    if not kernel or any(s != 1 for s in attrs.get("strides", [])):
        return None
    dilations = list(attrs.get("dilations", [1] * len(kernel)))
    totals = [d * (k - 1) for k, d in zip(kernel, dilations)]
    small = [t // 2 for t in totals]
    big = [t - s for t, s in zip(totals, small)]
    return small + big if auto_pad == "SAME_UPPER" else big + small


def _replace_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    if len(nodes) == len(graph.node):
        return
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


# =========================================================================== checking


def _opset_versions(model: onnx.ModelProto) -> dict[str, int]:
    versions = {op.domain or "": op.version for op in model.opset_import}
    if "ai.onnx" in versions:
        versions[""] = max(versions.pop("ai.onnx"), versions.get("", 0))
    return versions


def _label(operation: str, domain: str, version: int | None) -> str:
    name = operation if domain in _ONNX_DOMAINS else f"{domain}.{operation}"
    return f"{name}-{version if version is not None else '?'}"


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Operators without a converter (after register_converters), as 'Op-opset', sorted.

    Model-local functions are looked into, since to_torch inlines them.
    """
    register_converters()
    if len(model.functions) > 0:
        model = onnx.inliner.inline_local_functions(model)
    return _missing_converters(model)


def _missing_converters(model: onnx.ModelProto) -> list[str]:
    versions = _opset_versions(model)
    missing = set()
    for node in model.graph.node:
        domain = "" if node.domain in _ONNX_DOMAINS else node.domain
        version = versions.get(domain)
        try:
            if version is None:
                raise NotImplementedError("no opset for this domain")
            registry.get_converter(operation_type=node.op_type, version=version, domain=domain)
        except NotImplementedError:
            missing.add(_label(node.op_type, domain, version))
    return sorted(missing)


def to_torch(model: onnx.ModelProto) -> torch.nn.Module:
    """Convert an ONNX model to a torch module (eval mode); the caller freezes parameters.

    Raises UnsupportedOperatorError naming each operator without a converter, and
    ModelError, naming the node when it can, for every other conversion failure.
    """
    register_converters()
    try:
        prepared = prepare_graph(model)
    except Exception as exc:  # onnx raises many types for malformed graphs
        raise ModelError(f"cannot prepare the ONNX graph for conversion: {exc}") from exc
    missing = _missing_converters(prepared)
    if missing:
        raise UnsupportedOperatorError(missing)
    try:
        module = _onnx2torch_convert(prepared)
    except Exception as exc:  # onnx2torch's converters raise arbitrary types (KeyError, ...)
        raise ModelError(f"onnx2torch cannot convert the model: {_describe_failure(prepared, exc)}") from exc
    return module.eval()


def _describe_failure(model: onnx.ModelProto, exc: Exception) -> str:
    """Name the node whose converter fails, by re-running converters one by one."""
    fallback = f"{type(exc).__name__}: {exc}"
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        graph = OnnxGraph(inferred.graph)
    except Exception:  # the original error is the useful one then
        return fallback
    versions = _opset_versions(inferred)
    for node in graph.nodes.values():
        version = versions.get(node.domain or "", 0)
        try:
            registry.get_converter(node.operation_type, version, node.domain or "")(node, graph)
        except Exception as node_exc:  # report whichever converter fails first
            label = _label(node.operation_type, node.domain, version)
            return f"node {node.name or node.unique_name!r} ({label}): {type(node_exc).__name__}: {node_exc}"
    return fallback
