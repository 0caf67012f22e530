"""Running a model: the adapter between the library boundary and a model's convention, and the
onnxruntime core.

The adapter is three pieces around a core (the onnx2torch module or an onnxruntime session
behind `OrtCore`), so both run through the very same code:

* `Adapter`: RGB in and out; colour (a `ColorSpace` of `COLOR_SPACES`: `rgb`, `bgr`, a Y model
  with its chroma upscaled by MATLAB bicubic) and the pre-upsampling of VDSR-style models;
* `Tiled`: a model with a fixed input height/width gets overlapping tiles of that size whose
  outputs are blended with linear ramps (an image smaller than a tile is edge-padded);
* `FixedBatch`: a model with a fixed batch size gets the batch in slices of that size;
* `Native`: one run of the core in its range (a `ValueRange`), layout and dtype, and the output
  it gives at the target scale.

Differentiable end to end: gradients of the attacks flow through all of them into the core.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sreval import memory
from sreval.conventions import INTEGER_TOPS, Conventions, normalize_values
from sreval.errors import ConfigError, ModelError
from sreval.io import env_number, from_ycc, imresize_torch, to_ycc

# what the core is fed per input dtype: the converted module takes integer images as floats
# holding the integers (its casts are straight-through, `sreval.convert.rounding`)
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "uint8": torch.float32, "uint16": torch.float32}
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
             "tensor(uint16)": np.uint16}
PROTO_LIMIT = (2 << 30) - (1 << 20)  # a protobuf message must stay below 2 GiB to be serialized


class ProbeTimeout(ModelError):
    """A small probe run did not finish in time (a graph that loops, or a huge computation)."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


# --------------------------------------------------------------------------- colour spaces and value ranges


class ColorSpace:
    """A model's colour convention: what it is fed from RGB (`to_model`: the input, and what
    is kept aside to rebuild RGB) and the RGB made from its output (`from_model`). This one is
    RGB itself."""

    channels = 3

    def to_model(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return x, None

    def from_model(self, out: Tensor, kept: Tensor | None) -> Tensor:
        return out


class BGR(ColorSpace):
    def to_model(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return x.flip(1), None

    def from_model(self, out: Tensor, kept: Tensor | None) -> Tensor:
        return out.flip(1)


class Luma(ColorSpace):
    """One channel, the Y of a YCbCr flavour (`sreval.io.to_ycc`); the chroma of the input is
    upscaled with MATLAB bicubic to the output's size and the three go back to RGB."""

    channels = 1

    def __init__(self, flavour: str):
        self.flavour = flavour

    def to_model(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        ycc = to_ycc(x, self.flavour)
        return ycc[:, :1], ycc[:, 1:]

    def from_model(self, out: Tensor, kept: Tensor | None) -> Tensor:
        assert kept is not None
        chroma = imresize_torch(kept, size=(int(out.shape[-2]), int(out.shape[-1])))
        return from_ycc(torch.cat([out, chroma], dim=1), self.flavour)


# Every colour convention a model may have (its name in `Conventions.color`, `--color`, the
# `sreval.color` metadata): a new one is a class above and a line here, and its name in COLORS.
COLOR_SPACES: dict[str, ColorSpace] = {"rgb": ColorSpace(), "bgr": BGR(), "y": Luma("y"), "yfull": Luma("yfull")}


class ValueRange:
    """The values a model reads and writes for images in [0, 1]: range x (x - mean) / std,
    mean and std of its normalisation (`Conventions.normalize`) in its own channel order."""

    def __init__(self, top: float, normalize: str = "none", color: str = "rgb"):
        self.top = top
        self.plain = normalize == "none"
        mean, std = normalize_values(normalize)
        channels = COLOR_SPACES[color].channels
        order = slice(None, None, -1) if color == "bgr" else slice(None)
        self.mean = torch.tensor(mean[order][:channels]).view(1, channels, 1, 1)
        self.std = torch.tensor(std[order][:channels]).view(1, channels, 1, 1)

    def to_model(self, x: Tensor) -> Tensor:
        if self.plain:
            return x * self.top
        return (x - self.mean.to(x.device)) / self.std.to(x.device) * self.top

    def from_model(self, out: Tensor) -> Tensor:
        if self.plain:
            return out / self.top
        return out / self.top * self.std.to(out.device) + self.mean.to(out.device)


# --------------------------------------------------------------------------- the adapter


class Native(nn.Module):
    """One run of the core: range, layout, dtype and memory format in; the chosen output, in
    NCHW [0, 1], out. `compute_dtype` overrides the dtype the core is fed (float32 for a
    float16 model converted on CPU)."""

    def __init__(self, core: nn.Module, conv: Conventions, compute_dtype: str | None = None,
                 channels_last: bool = False):
        super().__init__()
        self.core = core
        self.conv = conv
        self.compute_dtype = TORCH_DTYPES[compute_dtype or conv.dtype]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.range = ValueRange(conv.range, conv.normalize, conv.color)
        self.integer_top = INTEGER_TOPS.get(conv.dtype)

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv
        inp = self.range.to_model(x)
        if self.integer_top is not None:  # an integer image: rounded and saturated, straight-through
            inp = inp.round().clamp(0.0, self.integer_top).detach() + (inp - inp.detach())
        if c.layout == "nhwc":
            inp = inp.permute(0, 2, 3, 1)
        out = self.core(inp.to(self.compute_dtype).contiguous(memory_format=self.memory_format))
        if isinstance(out, (tuple, list)):
            if c.output >= len(out):
                raise ModelError(f"output index {c.output} out of range: the model gives {len(out)} outputs")
            out = out[c.output]
        out = out.float()
        if out.ndim != 4:
            raise ModelError(f"model output has rank {out.ndim}, expected an image")
        if c.out_layout == "nhwc":
            out = out.permute(0, 3, 1, 2)
        return self.range.from_model(out)


class FixedBatch(nn.Module):
    """A batch in slices of the model's fixed batch size (the last one padded by repeating its
    final image); any batch where the model takes any."""

    def __init__(self, inner: nn.Module, batch: int | None):
        super().__init__()
        self.inner = inner
        self.batch = batch

    def forward(self, x: Tensor) -> Tensor:
        b, n = self.batch, int(x.shape[0])
        if b is None or n == b:
            return self.inner(x)
        parts = []
        for i in range(0, n, b):
            chunk = x[i:i + b]
            short = b - int(chunk.shape[0])
            if short:
                chunk = torch.cat([chunk, chunk[-1:].expand(short, *chunk.shape[1:])])
            parts.append(self.inner(chunk)[: b - short])
        return torch.cat(parts)


class SizeRule(nn.Module):
    """Inputs the model refuses edge-padded (bottom/right) up to its minimum side and its size
    multiple, the output cropped back to `ratio` x the input: for models with reflect padding,
    windows, strided convolutions or pixel-unshuffled stages that refuse some sizes."""

    def __init__(self, inner: nn.Module, min_size: int | None, multiple: int | None, ratio: int):
        super().__init__()
        self.inner, self.min_size, self.multiple, self.ratio = inner, min_size or 1, multiple or 1, ratio

    def forward(self, x: Tensor) -> Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        ph, pw = (padding_to_fit(n, self.min_size, self.multiple) for n in (h, w))
        if not (ph or pw):
            return self.inner(x)
        padded = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.inner(padded)[..., : h * self.ratio, : w * self.ratio]


def padding_to_fit(n: Any, minimum: int, multiple: int) -> Any:
    """Pixels to add to a side of n: up to `minimum`, then up to a multiple of `multiple`. An
    int, or a traced size (arithmetic only, so an export traces it for every size)."""
    short = torch.clamp(minimum - n, min=0) if isinstance(n, Tensor) else max(0, minimum - n)
    return short + (-(n + short)) % multiple


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering [0, length) with tiles of `tile` overlapping by >= `overlap`."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def tile_overlap(tile: int) -> int:
    """Overlap between neighbouring tiles: a quarter of the tile (blending hides the seams of
    the border effects of each tile, which reach about a receptive field into it)."""
    return tile // 4


def ramp(length: int, width: int, device: torch.device) -> Tensor:
    """Blending weights along one axis of a tile: linear ramps of `width` at both ends,
    strictly positive, so a pixel covered by one tile only keeps that tile's value exactly."""
    i = torch.arange(length, device=device, dtype=torch.float32)
    edge = torch.minimum(i + 1, length - i)
    return (edge / (width + 1)).clamp(max=1.0) if width > 0 else torch.ones(length, device=device)


class Tiled(nn.Module):
    """An NCHW [0, 1] image of any size through a model whose input size is fixed (`tile`,
    None per free axis; None: nothing fixed, the image goes through whole)."""

    def __init__(self, inner: nn.Module, tile: tuple[int | None, int | None] | None):
        super().__init__()
        self.inner = inner
        self.tile = tile

    def forward(self, x: Tensor) -> Tensor:
        if self.tile is None:
            return self.inner(x)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        th, tw = self.tile[0] or h, self.tile[1] or w
        padded = F.pad(x, (0, max(0, tw - w), 0, max(0, th - h)), mode="replicate") if (h < th or w < tw) else x
        ys = tile_starts(max(h, th), th, tile_overlap(th))
        xs = tile_starts(max(w, tw), tw, tile_overlap(tw))
        acc = wsum = None
        k = 1
        for y0 in ys:
            for x0 in xs:
                out = self.inner(padded[..., y0:y0 + th, x0:x0 + tw])
                k = _tile_factor(out, th, tw)
                if acc is None:
                    acc = out.new_zeros(out.shape[0], out.shape[1], padded.shape[-2] * k, padded.shape[-1] * k)
                    wsum = out.new_zeros(1, 1, acc.shape[-2], acc.shape[-1])
                wy = ramp(th * k, tile_overlap(th) * k if len(ys) > 1 else 0, out.device)
                wx = ramp(tw * k, tile_overlap(tw) * k if len(xs) > 1 else 0, out.device)
                weight = (wy[:, None] * wx[None, :])[None, None]
                region = (..., slice(y0 * k, (y0 + th) * k), slice(x0 * k, (x0 + tw) * k))
                acc[region] = acc[region] + out * weight
                wsum[region] = wsum[region] + weight
        assert acc is not None and wsum is not None
        return (acc / wsum)[..., : h * k, : w * k]


def _tile_factor(out: Tensor, th: int, tw: int) -> int:
    kh, kw = out.shape[-2] / th, out.shape[-1] / tw
    if kh != kw or kh != int(kh) or kh < 1:
        raise ModelError(f"a {th}x{tw} tile gave a {out.shape[-2]}x{out.shape[-1]} output: not an integer upscale")
    return int(kh)


class Adapter(nn.Module):
    """RGB NCHW [0, 1] in, RGB NCHW [0, 1] out, around a core that speaks the model's
    convention: colour and pre-upsampling here, then `Tiled`, `FixedBatch` and `Native`."""

    def __init__(self, core: nn.Module, conv: Conventions, compute_dtype: str | None = None,
                 channels_last: bool = False):
        super().__init__()
        self.conv = conv
        self.native = Native(core, conv, compute_dtype, channels_last)
        ratio = 1 if conv.preupsampled else conv.scale
        self.run = Tiled(FixedBatch(SizeRule(self.native, conv.min_size, conv.multiple, ratio), conv.batch), conv.tile)

    @property
    def core(self) -> nn.Module:
        return self.native.core

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"model input must be RGB (N, 3, H, W), got {tuple(x.shape)}")
        space = COLOR_SPACES[c.color]
        inp, kept = space.to_model(x)
        if c.preupsampled:
            inp = imresize_torch(inp, scale=c.scale)
        return space.from_model(self.run(inp), kept)


# --------------------------------------------------------------------------- onnxruntime


def _ort() -> Any:
    """onnxruntime, an optional dependency (the `cpu` or the `gpu` extra: one Python module in
    two builds that overwrite each other, so neither can be a plain dependency)."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("onnxruntime is not installed: pip install 'sreval[cpu]' (or 'sreval[gpu]')") from None
    return onnxruntime


class OrtCore(nn.Module):
    """An onnxruntime session behind the nn.Module interface (no gradients), so the adapter
    and every evaluation path are shared between the reference and the converted model.
    `time_limit` (seconds) stops a run that takes longer (a probe on a broken graph);
    `run_bytes`, the memory a run takes per input element (measured by `sreval.trial`), is
    checked against the memory budget before each run."""

    def __init__(self, session: Any, time_limit: float | None = None, run_bytes: float | None = None,
                 name: str = "the model"):
        super().__init__()
        self.session = session
        self.time_limit, self.run_bytes, self.name = time_limit, run_bytes, name
        self.input_name = session.get_inputs()[0].name
        self.input_type = ORT_TYPES.get(session.get_inputs()[0].type)
        self.output_names = [o.name for o in session.get_outputs()]

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        arr = x.detach().cpu().numpy()
        if self.input_type is not None and arr.dtype != self.input_type:
            arr = arr.astype(self.input_type)  # integer inputs come rounded from `Native`
        if self.run_bytes is not None:
            memory.require(self.run_bytes * arr.size, f"{self.name}: running the model on a {'x'.join(map(str, arr.shape))} input")
        outs = run_session(self.session, self.output_names, {self.input_name: arr}, self.time_limit)
        ts = [torch.from_numpy(np.asarray(o)).to(x.device) for o in outs]
        return ts if len(ts) > 1 else ts[0]


def probe_seconds() -> float:
    """The limit of one small probe run (SREVAL_PROBE_TIMEOUT, default 30 s): a graph that loops
    is stopped while sreval reads its shapes or checks its parity."""
    value = env_number("SREVAL_PROBE_TIMEOUT", float, "seconds")
    return 30.0 if value is None else float(value)


def run_time_limit() -> float | None:
    """The per-run limit of every onnxruntime call on an image (seconds; SREVAL_TIME_LIMIT or
    `sreval --time-limit`; none by default): a model that loops on large inputs passes every
    probe and would then hang. 'inf' is no limit."""
    return env_number("SREVAL_TIME_LIMIT", float, "seconds", infinite_is_none=True)


def run_session(session: Any, names: list[str], feeds: dict[str, np.ndarray],
                time_limit: float | None = None) -> list[Any]:
    """session.run, interruptible and time-limited, with the logger silenced (errors come back
    as exceptions, in one line). The run happens in a worker thread: a signal handler cannot
    run while the main thread sits inside onnxruntime's C code, so the main thread waits in
    short joins, and on Ctrl-C (or when the limit passes) raises onnxruntime's terminate
    flag, which stops the run at its next node. `time_limit` (a probe's) else run_time_limit()."""
    opts = _ort().RunOptions()
    opts.log_severity_level = 4
    probe = time_limit is not None
    limit = time_limit if probe else run_time_limit()
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["out"] = session.run(names, feeds, opts)
        except BaseException as e:  # handed to the waiting thread
            result["err"] = e

    worker = threading.Thread(target=work, name="sreval-onnxruntime", daemon=True)
    worker.start()
    deadline = time.monotonic() + limit if limit else None
    try:
        while worker.is_alive():
            worker.join(0.05)
            if deadline is not None and time.monotonic() > deadline:
                opts.terminate = True
    except KeyboardInterrupt:
        opts.terminate = True
        worker.join()
        raise
    err = result.get("err")
    if err is not None:
        if opts.terminate or "terminate flag" in str(err):
            if probe:
                raise ProbeTimeout(f"the model did not finish a small probe run within {limit:g} s "
                                   f"(SREVAL_PROBE_TIMEOUT)") from None
            raise ModelError(f"the model did not finish one run within {limit:g} s (--time-limit / "
                             f"SREVAL_TIME_LIMIT)") from None
        raise err
    return result["out"]


def open_session(proto: onnx.ModelProto, name: str, device: torch.device, path: Any = None) -> Any:
    """An onnxruntime session of the (self-contained) proto; a proto too large to serialize
    (2 GiB and more, with its external data) is opened from its checked file instead."""
    ort = _ort()
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # errors come back as exceptions; the log would add lines
    # Idle onnxruntime threads spin for a while after each run by default and then starve
    # the torch code that runs between (measured: 70 ms for a 50k-element isfinite).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        if path is not None and proto.ByteSize() >= PROTO_LIMIT:
            return ort.InferenceSession(str(path), opts, providers=providers)
        return ort.InferenceSession(proto.SerializeToString(), opts, providers=providers)
    except Exception as e:
        raise ModelError(f"{name}: onnxruntime cannot load the model: {first_line(e)}") from None


_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message in one line (its type where it has none), without the terminal
    colour codes some libraries put in their messages (torch.export's)."""
    text = _TERMINAL_CODES.sub("", str(e)).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]


__all__ = ["ColorSpace", "BGR", "Luma", "COLOR_SPACES", "ValueRange", "Adapter", "Native", "FixedBatch", "Tiled", "OrtCore", "ProbeTimeout", "run_session", "run_time_limit",
           "open_session", "resolve_device", "padding_to_fit", "tile_starts", "tile_overlap", "ramp", "first_line",
           "TORCH_DTYPES", "NUMPY_DTYPES", "PROTO_LIMIT", "probe_seconds"]
