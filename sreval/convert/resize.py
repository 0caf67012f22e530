"""Resize (10, 11, 13, 18, 19) and Upsample (7, 9, 10) with onnxruntime's numbers in every mode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from sreval.convert.registry import converter


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


converter("Resize", (10,))(_convert_resize_scales_only)
converter("Resize", (11, 13, 18, 19))(_convert_resize)
converter("Upsample", (9, 10))(_convert_resize_scales_only)
converter("Upsample", (7,))(_convert_upsample_7)
