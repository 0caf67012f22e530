"""Deciding a model's conventions from its ONNX file: per field from explicit overrides (CLI
options), the `sreval.*` metadata our exporters write, then the graph's shapes and one probe
run of onnxruntime; `sources` records which one gave each field (detection, the last step for
foreign files, is `sreval.detect`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from sreval.conventions import INTEGER_TOPS, LAYOUTS, PARSERS, Conventions, Meta, channels_of
from sreval.errors import ConfigError, ModelError
from sreval.onnxfile import ONNX_DTYPES, layout_channels, layout_from_graph
from sreval.parity import SIZES as PARITY_SIZES
from sreval.runtime import NUMPY_DTYPES, ProbeTimeout, first_line, probe_seconds, run_session

MAX_INPUT_VALUES = 1 << 26  # a fixed input shape larger than this (256 MiB float32) is refused
PROBE_SIZE = (19, 23)  # odd sizes catch padding and pixel-shuffle order slips
GROW_SIDES = (19, 35, 67, 131)  # smallest sides of the probe sizes tried where the model refuses PROBE_SIZE
SIZE_MULTIPLES = (1, 2, 4, 8, 16, 32, 64, 12, 24)  # powers of two, then windows of 12 and 24
BAKED_SIDES = (64, 32, 128, 256, 48, 96, 16, 24)  # square export sizes, the usual ones first
SMALLEST = min((hw[1:] for hw in PARITY_SIZES), key=lambda hw: hw[0] * hw[1])  # the parity's smaller size
BATCH_TOL = 1e-4  # relative: a batch and its images alone differ by summation order only


@dataclass
class Resolver:
    """What the file says, and a way to run it: `session()` gives the onnxruntime session."""

    name: str
    proto: onnx.ModelProto
    input: onnx.ValueInfoProto
    input_dims: list[int | None]
    metadata: Mapping[str, str]
    session: Callable[[], Any]
    sources: dict[str, str] = field(default_factory=dict)
    probe_hw: tuple[int, int] = PROBE_SIZE  # the input size the probe ran at
    luma_source: str = "shape"  # why a one-channel model reads the Y flavour it reads

    def _given(self, name: str, overrides: dict[str, Any]) -> Any:
        """An override, else a metadata value, parsed; records where it came from."""
        for source, table, key in (("override", overrides, name), ("metadata", self.metadata, Meta.field(name))):
            if key in table:
                try:
                    value = PARSERS[name](table[key])
                except (TypeError, ValueError):
                    raise ConfigError(f"{self.name}: {source} {key}={table[key]!r} "
                                      f"is not a valid {name}") from None
                self.sources[name] = source
                return value
        return None

    def resolve(self, overrides: dict[str, Any]) -> Conventions:
        """The conventions, per field from the overrides, the metadata, then the shapes and
        one probe run; `sources` records which gave each."""
        dtype = ONNX_DTYPES[self.input.type.tensor_type.elem_type]
        value_range = self._given("range", overrides)
        if value_range is None and dtype in INTEGER_TOPS:  # an 8- or 16-bit image: its full range
            value_range, self.sources["range"] = INTEGER_TOPS[dtype], f"shape: {dtype} input"
        if value_range is None:
            value_range, self.sources["range"] = 1.0, "default"
        normalize = self._given("normalize", overrides)
        if normalize is None:
            normalize, self.sources["normalize"] = "none", "default"
        layout, color = self._given("layout", overrides), self._given("color", overrides)
        self.sources.update(dtype="shape", tile="shape", batch="shape")
        first: ModelError | None = None
        for lay, col in self._layout_colors(layout, color):
            tile, batch = self._fixed_shape(lay)
            base = Conventions(scale=1, range=value_range, normalize=normalize, color=col, layout=lay, dtype=dtype,
                               tile=tile, batch=batch)
            try:
                shapes, hw, base = self._probe_growing(base)
            except ProbeTimeout:
                raise
            except ModelError as e:
                first = first or e
                continue
            self.sources.setdefault("layout", "shape")
            self.sources.setdefault("color", self.luma_source if base.channels == 1 else "default")
            return self._batch_rule(self._from_probe(base, shapes, hw, overrides))
        assert first is not None
        raise first

    def _layout_colors(self, layout: str | None, color: str | None) -> list[tuple[str, str]]:
        """(layout, colour) pairs to probe, most likely first: one pair where the input shape
        fixes the channels, the plausible ones where it does not (all dims dynamic)."""
        dims = self.input_dims
        layouts = [layout] if layout else [lay for lay in LAYOUTS if layout_channels(dims, lay) in (1, 3)]
        if len(layouts) != 1 and not layout:
            by_graph = layout_from_graph(self.proto, self.input.name)
            layouts = [by_graph] + [lay for lay in LAYOUTS if lay != by_graph] if by_graph else list(LAYOUTS)
        pairs = []
        for lay in layouts:
            ch = layout_channels(dims, lay)
            if color is not None:
                if ch is not None and ch != channels_of(color):
                    raise ModelError(f"{self.name}: input has {ch} channels, which does not fit colour {color!r}")
                pairs.append((lay, color))
            else:
                luma = self._luma()
                pairs += [(lay, "rgb")] if ch == 3 else [(lay, luma)] if ch == 1 else [(lay, "rgb"), (lay, luma)]
        return pairs

    def _luma(self) -> str:
        """The Y flavour of a one-channel model nothing names: studio-range (MATLAB's, the SR
        literature's), or full-range for a tf2onnx graph (OpenCV's dnn_superres zoo). No score
        tells them apart (`sreval.detect`), so the source says so and names the option."""
        if self.proto.producer_name.lower().startswith("tf2onnx"):
            self.luma_source = ("shape: one channel, a tf2onnx graph (OpenCV dnn_superres zoo): full-range Y; "
                                "studio and full range cannot be told apart, --color y for studio range")
            return "yfull"
        self.luma_source = ("shape: one channel, studio-range Y (MATLAB); studio and full range cannot be "
                            "told apart, --color yfull for full-range Y (OpenCV zoo)")
        return "y"

    def _fixed_shape(self, layout: str) -> tuple[tuple[int | None, int | None] | None, int | None]:
        d = self.input_dims
        h, w = (d[2], d[3]) if layout == "nchw" else (d[1], d[2])
        free = (PROBE_SIZE[0] if h is None else 1) * (PROBE_SIZE[1] if w is None else 1)
        values = math.prod(v or 1 for v in d) * free
        if values > MAX_INPUT_VALUES:
            shown = ["?" if v is None else v for v in d]
            raise ModelError(f"{self.name}: fixed input shape {shown} is too large to run "
                             f"({values:,} values; the limit is {MAX_INPUT_VALUES:,})")
        return ((h, w) if (h or w) else None), d[0]

    def _from_probe(self, base: Conventions, shapes: list[tuple[int, ...]], hw: tuple[int, int],
                    overrides: dict[str, Any]) -> Conventions:
        """Scale, output index and pre-upsampling from the output shapes of one probe run."""
        h, w = hw
        scale = self._given("scale", overrides)
        output = self._given("output", overrides)
        pre = self._given("preupsampled", overrides)
        base, ratios = self._output_layout(base, shapes, h, w)
        images = [i for i, r in enumerate(ratios) if r is not None]
        if not images:
            raise ModelError(f"{self.name}: not an SR model: output shape(s) "
                             f"{[list(s) for s in shapes]} are not images of the input's channels"
                             if any(len(s) == 4 for s in shapes) else
                             f"{self.name}: not an SR model: output rank {len(shapes[0])}, expected an image")
        want = 1 if pre else scale
        if output is None:
            output = self._choose_output(ratios, images, want)
        elif not 0 <= output < len(shapes) or ratios[output] is None:
            raise ModelError(f"{self.name}: output {output} is not an image output "
                             f"(image outputs: {images})")
        ratio = ratios[output]
        assert ratio is not None
        if pre is None:
            pre = ratio == 1 and scale is not None and scale > 1
            self.sources["preupsampled"] = "shape"
        if ratio == 1 and not pre and scale is None:
            raise ModelError(f"{self.name}: output has the input's size: a pre-upsampled (VDSR-style) "
                             f"model? give --scale")
        if pre and ratio != 1:
            raise ModelError(f"{self.name}: --preupsampled, but output {output} is {ratio}x the input")
        if scale is None:
            scale, self.sources["scale"] = ratio, "shape"
        elif not pre and ratio != scale:
            raise ModelError(f"{self.name}: scale {scale} asked for, but output {output} is x{ratio}")
        if self.sources.get("output") is None:
            self.sources["output"] = "shape"
        return replace(base, scale=scale, output=output, preupsampled=pre)

    def _output_layout(self, base: Conventions, shapes: list[tuple[int, ...]], h: int,
                       w: int) -> tuple[Conventions, list[int | None]]:
        """The outputs read in the input's layout, else in the other one (tf2onnx graphs read
        NHWC and give NCHW); the first reading's error if neither finds an image output."""
        first: ModelError | None = None
        for lay in dict.fromkeys((base.layout, *LAYOUTS)):
            conv = replace(base, output_layout=None if lay == base.layout else lay)
            try:
                ratios = [self._ratio(s, h, w, conv) for s in shapes]
            except ModelError as e:
                first = first or e
                continue
            if any(r is not None for r in ratios):
                if conv.output_layout:
                    self.sources["output_layout"] = "shape"
                return conv, ratios
        if first is not None:
            raise first
        return base, [None] * len(shapes)

    def _choose_output(self, ratios: list[int | None], images: list[int], want: int | None) -> int:
        if want is not None:
            match = [i for i in images if ratios[i] == want]
            if match:
                return match[0]
            same = [i for i in images if ratios[i] == 1]
            if same:  # the model returns the input's size: pre-upsampled, the scale is ours
                return same[0]
            shown = ", ".join(f"{i}: x{ratios[i]}" for i in images)
            raise ModelError(f"{self.name}: no output at x{want} (image outputs {shown})")
        return max(images, key=lambda i: (ratios[i], -i))

    def _ratio(self, shape: Sequence[int], h: int, w: int, conv: Conventions) -> int | None:
        """Integer upscale of an output relative to the (h, w) input, if it is an image."""
        if len(shape) != 4:
            return None
        ch = shape[1] if conv.out_layout == "nchw" else shape[3]
        oh, ow = (shape[2], shape[3]) if conv.out_layout == "nchw" else (shape[1], shape[2])
        if ch != conv.channels:
            return None
        if oh % h or ow % w or oh // h != ow // w or oh < h:
            raise ModelError(f"{self.name}: not an SR model: output {oh}x{ow} is not an integer "
                             f"multiple of input {h}x{w}")
        return oh // h

    def _probe_growing(self, conv: Conventions) -> tuple[list[tuple[int, ...]], tuple[int, int], Conventions]:
        """The probe at its usual odd size, then, where the model refuses that (an error, or an
        output that is no integer multiple of the input) and its size is free, at larger sizes
        and at multiples of 2..64 (`grown_sizes`): a model with a minimum input size (reflect
        padding, windows, strided convolutions) or a size multiple (windows without padding,
        pixel-unshuffled stages) runs on every real image. The first size that runs gives
        `min_size` and `multiple`; other inputs are edge-padded to fit them. The last resort is
        a square export size (BAKED_SIDES): a graph declared dynamic whose export size is baked
        into it (a Reshape or a window mask) runs there alone, and is tiled like a fixed-size one."""
        try:
            shapes, hw = self._probe_fitting(conv, PROBE_SIZE)
        except ProbeTimeout:
            raise
        except ModelError as e:
            if conv.tile is not None:
                raise
            fails = f"probe: fails at {PROBE_SIZE[0]}x{PROBE_SIZE[1]} ({e})"
            failure = e
        else:
            return shapes, hw, conv if conv.tile is not None else self._below_probe(conv)
        grown = grown_sizes()
        found = self._first_fitting(conv, [size for size, _ in grown])
        if found is not None:
            shapes, hw, i = found
            multiple = grown[i][1]
            side = self._smallest_multiple(conv, min(hw), multiple)
            rule = f"a side of at least {side}" + (f" and a multiple of {multiple}" if multiple > 1 else "")
            self.sources["min_size"] = f"{fails}; runs at {hw[0]}x{hw[1]}: other inputs are edge-padded to {rule}"
            return shapes, hw, replace(conv, min_size=side, multiple=multiple if multiple > 1 else None)
        found = self._first_fitting(conv, [(side, side) for side in BAKED_SIDES])
        if found is not None:
            shapes, hw, _ = found
            self.sources["tile"] = (f"{fails} and at every grown size and multiple; runs at {hw[0]}x{hw[1]}: the "
                                    f"export size is baked into the graph, images are tiled")
            return shapes, hw, replace(conv, tile=hw)
        raise failure

    def _below_probe(self, conv: Conventions) -> Conventions:
        """A model that runs at PROBE_SIZE may still refuse the parity's smaller input (RGT's
        window reductions need a side of 16): then inputs are edge-padded to the probe's side."""
        try:
            self._probe_fitting(conv, SMALLEST)
        except ProbeTimeout:
            raise
        except ModelError as e:
            self.sources["min_size"] = (f"probe: runs at {PROBE_SIZE[0]}x{PROBE_SIZE[1]}, fails at {SMALLEST[0]}x"
                                        f"{SMALLEST[1]} ({e}): smaller inputs are edge-padded to {min(PROBE_SIZE)}")
            return replace(conv, min_size=min(PROBE_SIZE))
        return conv

    def _smallest_multiple(self, conv: Conventions, side: int, multiple: int) -> int:
        """The smallest of a few square sides below `side`, in steps of `multiple`, that the
        model runs at: the grown sizes overshoot (a multiple of 16 is first tried at 48x80), and
        every pixel of padding changes an attention model's output."""
        if multiple == 1:
            return side
        smallest = side
        # never below the parity's smaller input: degenerate sizes (no whole window) crash
        # onnxruntime itself in some graphs (SIGFPE, an integer division by zero: OmniSR at 8x8)
        floor = min(SMALLEST)
        for smaller in range(side - multiple, max(floor - 1, side - 5 * multiple), -multiple):
            try:
                self._probe_fitting(conv, (smaller, smaller))
            except ProbeTimeout:
                raise
            except ModelError:
                break
            smallest = smaller
        return smallest

    def _first_fitting(self, conv: Conventions, sizes: Sequence[tuple[int, int]],
                       ) -> tuple[list[tuple[int, ...]], tuple[int, int], int] | None:
        """The probe at the first of `sizes` where it fits (output shapes, size, its index)."""
        for i, size in enumerate(sizes):
            try:
                shapes, hw = self._probe_fitting(conv, size)
            except ProbeTimeout:
                raise
            except ModelError:
                continue
            self.probe_hw = hw
            return shapes, hw, i
        return None

    def _probe_fitting(self, conv: Conventions,
                       size: tuple[int, int]) -> tuple[list[tuple[int, ...]], tuple[int, int]]:
        """The probe's output shapes at `size`; a ModelError where the model fails there or an
        image output is no integer multiple of the input (Real-CUGAN rounds odd sides up)."""
        shapes, hw = self._probe_shapes(conv, size)
        self._output_layout(conv, shapes, *hw)
        return shapes, hw

    def _probe_shapes(self, conv: Conventions,
                      size: tuple[int, int]) -> tuple[list[tuple[int, ...]], tuple[int, int]]:
        x, (h, w) = self._probe_input(conv, conv.batch or 1, size, seed=0)
        sess = self.session()
        try:
            outs = self._run(sess, [o.name for o in sess.get_outputs()], x)
        except ProbeTimeout:
            raise
        except Exception as e:
            raise ModelError(f"{self.name}: the model failed to run: {first_line(e)}") from None
        arrays = [np.asarray(o) for o in outs]
        for a in arrays:
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise ModelError(f"{self.name}: model output contains NaN or Inf")
        return [tuple(int(s) for s in a.shape) for a in arrays], (h, w)

    def _probe_input(self, conv: Conventions, n: int, size: tuple[int, int],
                     seed: int) -> tuple[np.ndarray, tuple[int, int]]:
        """A random batch of n probe images in the model's layout, range and dtype, at `size`
        (or the model's fixed size), and the (h, w) it has."""
        h, w = self.input_size(conv.layout, *size)
        shape = (n, conv.channels, h, w) if conv.layout == "nchw" else (n, h, w, conv.channels)
        x = np.random.default_rng(seed).random(shape) * conv.range
        return x.astype(NUMPY_DTYPES[conv.dtype]), (h, w)

    def _run(self, sess: Any, outputs: list[str], x: np.ndarray) -> list[Any]:
        """One bounded onnxruntime run of the probe; a timeout names the model."""
        try:
            return run_session(sess, outputs, {sess.get_inputs()[0].name: x}, probe_seconds())
        except ProbeTimeout as e:
            raise ProbeTimeout(f"{self.name}: {e}") from None

    def _batch_rule(self, conv: Conventions) -> Conventions:
        """A batch of two images against the two images alone, through onnxruntime: many
        exports bake batch 1 into a Reshape and then give wrong numbers (not an error) on a
        batch, which parity (torch against onnxruntime, both on the same graph) cannot see.
        Such a model, or one that fails on a batch, is run one image at a time. The second
        image is half as bright, so that a graph whose numbers depend on the batch's range
        (dynamic quantisation: one scale for the whole tensor) differs too."""
        if conv.batch is not None:
            return conv
        x, _ = self._probe_input(conv, 2, self.probe_hw, seed=1)
        x[1] = (x[1].astype(np.float64) * 0.5).astype(x.dtype)
        sess = self.session()
        out = [sess.get_outputs()[conv.output].name]
        singles = [np.asarray(self._run(sess, out, x[i:i + 1])[0]) for i in (0, 1)]
        try:
            both = np.asarray(self._run(sess, out, x)[0])
        except ProbeTimeout:
            raise
        except Exception as e:  # noqa: BLE001 - any runtime failure on a batch means batch 1
            self.sources["batch"] = f"probe: fails on a batch of 2 ({first_line(e)}): one image at a time"
            return replace(conv, batch=1)
        alone = np.concatenate(singles)
        diff = float(np.abs(both - alone).max()) if both.shape == alone.shape else math.inf
        if diff > BATCH_TOL * max(1.0, float(np.abs(alone).max())):
            self.sources["batch"] = (f"probe: a batch of 2 differs from the two images alone by {diff:.3g} "
                                     f"(a batch baked into the graph, or a range taken over the batch): one image at a time")
            return replace(conv, batch=1)
        self.sources["batch"] = "probe: any (a batch of 2 equals the images alone)"
        return conv

    def input_size(self, layout: str, h: int, w: int) -> tuple[int, int]:
        """An input size the model accepts: its fixed size where it has one, else (h, w)."""
        d = self.input_dims
        fh, fw = (d[2], d[3]) if layout == "nchw" else (d[1], d[2])
        return (fh or h, fw or w)


def grown_sizes() -> list[tuple[tuple[int, int], int]]:
    """((h, w), multiple) to probe, in order, after PROBE_SIZE: per multiple m, sizes m*a x
    m*(a+2) with a odd (so a power of two m is the largest one dividing both) and each side >=
    a GROW_SIDES entry. A model that needs a multiple of 8 is found at 24x40, one that also
    needs 64 pixels at 72x88."""
    out: list[tuple[tuple[int, int], int]] = []
    for m in SIZE_MULTIPLES:
        for side in GROW_SIDES[1:] if m == 1 else GROW_SIDES:
            a = -(-side // m)
            a += 1 - a % 2
            size = (m * a, m * (a + 2))
            if all(size != s for s, _ in out):
                out.append((size, m))
    return out


__all__ = ["Resolver", "PROBE_SIZE", "MAX_INPUT_VALUES", "grown_sizes"]
