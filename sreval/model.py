"""One ONNX SR model with its conventions, as a differentiable PyTorch module and as the
onnxruntime reference.

Everything outside this module sees the library boundary: float32 RGB NCHW in [0, 1], and an
output `scale` times larger. A model's own convention lives in `Adapter`, which wraps either
the onnx2torch module or the onnxruntime session, so both run through the very same code:

* value range 0..1 or 0..255;
* colour: `rgb`, `bgr`, `y` (one channel: the Y of MATLAB `rgb2ycbcr`, BT.601 studio range,
  Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 in 0..255 units; the models of the SR
  literature, VDSR, LapSRN, FSRCNN, SRCNN, were trained on it) or `yfull` (one channel: the
  full-range Y of JPEG / OpenCV `COLOR_BGR2YCrCb`, Y = 0.299 R + 0.587 G + 0.114 B; the
  OpenCV `dnn_superres` zoo). A Y model super-resolves Y; its chroma (of the same YCbCr
  flavour) is upscaled with MATLAB bicubic, and the three are converted back to RGB;
* layout NCHW or NHWC (TensorFlow-made graphs);
* pre-upsampled input (VDSR style: the model takes the unrounded MATLAB-bicubic upscale and
  returns an image of the same size);
* several outputs (LapSRN's x2 and x4): the one at the target scale is used;
* float16 inputs (computed in float32 by the PyTorch module on CPU);
* a fixed input height/width: the image is cut into overlapping tiles of that size whose
  outputs are blended with linear ramps (an image smaller than a tile is edge-padded);
* a fixed batch size: the batch is run in slices of that size.

Conventions come, per field, from explicit overrides (CLI options), the ONNX metadata our
exporters write (`sreval.scale`, `sreval.range`, `sreval.color`, `sreval.layout`,
`sreval.preupsampled`, `sreval.output`), the graph's shapes and one probe run of
onnxruntime, detection (`sreval.detect`, see `SRModel` for when), or defaults; `sources`
records which one gave each field.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sreval.errors import ConfigError, ModelError, ParityError, UnsupportedOperatorError

COLORS = ("rgb", "bgr", "y", "yfull")
LAYOUTS = ("nchw", "nhwc")
FIELDS = ("scale", "range", "color", "layout", "preupsampled", "output")
RUNTIMES = ("auto", "torch", "onnxruntime")
CHANNELS_LAST_DEFAULT = True
PARITY_TOL = 1e-4  # of the output range, which the adapter maps to [0, 1]
# float16 keeps 11 significant bits: one unit in the last place at 1.0 is 2^-10, and a few
# layers accumulate several. 2^-8 (about 1/256, under one 8-bit grey level) still catches a
# wrong conversion, whose errors are whole grey levels or more.
PARITY_TOL_FP16 = 2.0**-8
MAX_INPUT_VALUES = 1 << 26  # a fixed input shape larger than this (256 MiB float32) is refused
PROBE_SIZE = (19, 23)  # odd sizes catch padding and pixel-shuffle order slips
PARITY_SIZES = ((1, 19, 23), (2, 17, 15))  # odd, and >= 15: RFDN's ESA pools need that much
PROBE_SECONDS = float(os.environ.get("SREVAL_PROBE_TIMEOUT", "30"))
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_ORT_TYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}
_NP_TYPES = {"float32": np.float32, "float16": np.float16}


class ProbeTimeout(ModelError):
    """A small probe run did not finish in time (a graph that loops, or a huge computation)."""


class ConversionError(ModelError):
    """onnx2torch converted nothing usable (a converter failed); onnxruntime may still run it."""


@dataclass(frozen=True)
class Conventions:
    """How the model wants its input and gives its output (see the module docstring).

    `tile` is the model's fixed input (height, width) in the pixels it reads (None per axis
    where the size is free; None when both are), `batch` its fixed batch size (None: any).
    """

    scale: int
    range: float = 1.0
    color: str = "rgb"
    layout: str = "nchw"
    preupsampled: bool = False
    output: int = 0
    dtype: str = "float32"
    tile: tuple[int | None, int | None] | None = None
    batch: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not (isinstance(self.scale, int) and 1 <= self.scale <= 16):
            raise ConfigError(f"scale must be an integer in 1..16, got {self.scale!r}")
        if self.range not in (1.0, 255.0):
            raise ConfigError(f"range must be 1 or 255, got {self.range!r}")
        if self.color not in COLORS:
            raise ConfigError(f"color must be one of {', '.join(COLORS)}, got {self.color!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be nchw or nhwc, got {self.layout!r}")
        if isinstance(self.output, bool) or not isinstance(self.output, int) or self.output < 0:
            raise ConfigError(f"output index must be an integer >= 0, got {self.output!r}")
        if self.dtype not in _TORCH_DTYPES:
            raise ConfigError(f"dtype must be float32 or float16, got {self.dtype!r}")
        if self.tile is not None and (len(self.tile) != 2 or any(t is not None and t < 1 for t in self.tile)):
            raise ConfigError(f"tile must be (height, width) with sizes >= 1, got {self.tile!r}")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"fixed batch must be >= 1, got {self.batch}")

    @property
    def channels(self) -> int:
        return 1 if self.color in ("y", "yfull") else 3

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tile"] = list(self.tile) if self.tile is not None else None
        return d


# --------------------------------------------------------------------------- colour


# JPEG / OpenCV full-range YCbCr, rows Y, Cb, Cr from R, G, B in [0, 1]; offsets in [0, 1].
_FULL_MATRIX = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_FULL_OFFSET = np.array([0.0, 0.5, 0.5])
_FULL_INVERSE = np.linalg.inv(_FULL_MATRIX)


def _affine(x: Tensor, matrix: np.ndarray, pre: np.ndarray, post: np.ndarray) -> Tensor:
    m = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
    a = torch.as_tensor(pre, dtype=x.dtype, device=x.device).view(3, 1, 1)
    b = torch.as_tensor(post, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return torch.einsum("ij,njhw->nihw", m, x - a) + b


def to_ycc(x: Tensor, color: str) -> Tensor:
    """RGB (N, 3, H, W) -> the YCbCr flavour of a Y colour convention ('y' or 'yfull')."""
    from sreval.io import rgb_to_ycbcr

    return rgb_to_ycbcr(x) if color == "y" else _affine(x, _FULL_MATRIX, np.zeros(3), _FULL_OFFSET)


def from_ycc(x: Tensor, color: str) -> Tensor:
    """Inverse of `to_ycc`, no clipping."""
    from sreval.io import ycbcr_to_rgb

    return ycbcr_to_rgb(x) if color == "y" else _affine(x, _FULL_INVERSE, _FULL_OFFSET, np.zeros(3))


# --------------------------------------------------------------------------- tiling


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


# --------------------------------------------------------------------------- the adapter


class Adapter(nn.Module):
    """RGB NCHW [0, 1] in, RGB NCHW [0, 1] out, around a core that speaks the model's convention.

    Differentiable end to end: gradients of the attacks flow through the colour transform,
    the pre-upsampling, the tiling and the range scaling into the core. `compute_dtype`
    overrides the dtype the core is fed (float32 for a float16 model converted on CPU).
    """

    def __init__(self, core: nn.Module, conv: Conventions, compute_dtype: str | None = None,
                 channels_last: bool = False):
        super().__init__()
        self.core = core
        self.conv = conv
        self.compute_dtype = _TORCH_DTYPES[compute_dtype or conv.dtype]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, x: Tensor) -> Tensor:
        from sreval.io import imresize_torch

        c = self.conv
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"model input must be RGB (N, 3, H, W), got {tuple(x.shape)}")
        ycc = to_ycc(x, c.color) if c.channels == 1 else None
        inp = ycc[:, :1] if ycc is not None else (x.flip(1) if c.color == "bgr" else x)
        if c.preupsampled:
            inp = imresize_torch(inp, scale=c.scale)
        out = self.tiled(inp)
        if ycc is not None:
            chroma = imresize_torch(ycc[:, 1:], size=(int(out.shape[-2]), int(out.shape[-1])))
            return from_ycc(torch.cat([out, chroma], dim=1), c.color)
        return out.flip(1) if c.color == "bgr" else out

    def tiled(self, x: Tensor) -> Tensor:
        """The core on an NCHW [0, 1] image of any size: tiles where the model's size is fixed."""
        tile = self.conv.tile
        if tile is None:
            return self.batched(x)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        th, tw = tile[0] or h, tile[1] or w
        padded = F.pad(x, (0, max(0, tw - w), 0, max(0, th - h)), mode="replicate") if (h < th or w < tw) else x
        ys = tile_starts(max(h, th), th, tile_overlap(th))
        xs = tile_starts(max(w, tw), tw, tile_overlap(tw))
        acc = wsum = None
        k = 1
        for y0 in ys:
            for x0 in xs:
                out = self.batched(padded[..., y0:y0 + th, x0:x0 + tw])
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

    def batched(self, x: Tensor) -> Tensor:
        """The core on a batch, in slices of the model's fixed batch size (the last one padded
        by repeating its final image)."""
        b = self.conv.batch
        n = int(x.shape[0])
        if b is None or n == b:
            return self.call(x)
        parts = []
        for i in range(0, n, b):
            chunk = x[i:i + b]
            short = b - int(chunk.shape[0])
            if short:
                chunk = torch.cat([chunk, chunk[-1:].expand(short, *chunk.shape[1:])])
            parts.append(self.call(chunk)[: b - short])
        return torch.cat(parts)

    def call(self, x: Tensor) -> Tensor:
        """One run of the core: range, layout and dtype in; output choice and the way back."""
        c = self.conv
        inp = x * c.range
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
        if c.layout == "nhwc":
            out = out.permute(0, 3, 1, 2)
        return out / c.range


def _tile_factor(out: Tensor, th: int, tw: int) -> int:
    kh, kw = out.shape[-2] / th, out.shape[-1] / tw
    if kh != kw or kh != int(kh) or kh < 1:
        raise ModelError(f"a {th}x{tw} tile gave a {out.shape[-2]}x{out.shape[-1]} output: not an integer upscale")
    return int(kh)


class OrtCore(nn.Module):
    """An onnxruntime session behind the nn.Module interface (no gradients), so the adapter
    and every evaluation path are shared between the reference and the converted model.
    `time_limit` (seconds) stops a run that takes longer (a probe on a broken graph)."""

    def __init__(self, session: Any, time_limit: float | None = None):
        super().__init__()
        self.session = session
        self.time_limit = time_limit
        self.input_name = session.get_inputs()[0].name
        self.output_names = [o.name for o in session.get_outputs()]

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        arr = x.detach().cpu().numpy()
        outs = run_session(self.session, self.output_names, {self.input_name: arr}, self.time_limit)
        ts = [torch.from_numpy(np.asarray(o)).to(x.device) for o in outs]
        return ts if len(ts) > 1 else ts[0]


def run_time_limit() -> float | None:
    """The per-run limit of every onnxruntime call on an image (seconds; SREVAL_TIME_LIMIT or
    `sreval --time-limit`; none by default): a model that loops on large inputs passes every
    probe and would then hang."""
    text = os.environ.get("SREVAL_TIME_LIMIT", "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"SREVAL_TIME_LIMIT must be a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"SREVAL_TIME_LIMIT must be > 0 seconds, got {text}")
    return value


def run_session(session: Any, names: list[str], feeds: dict[str, np.ndarray],
                time_limit: float | None = None) -> list[Any]:
    """session.run, interruptible and time-limited, with the logger silenced (errors come back
    as exceptions, in one line). The run happens in a worker thread: a signal handler cannot
    run while the main thread sits inside onnxruntime's C code, so the main thread waits in
    short joins, and on Ctrl-C (or when the limit passes) raises onnxruntime's terminate
    flag, which stops the run at its next node. `time_limit` (a probe's) else run_time_limit()."""
    import onnxruntime as ort

    opts = ort.RunOptions()
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


# --------------------------------------------------------------------------- reading files


@dataclass(frozen=True)
class Parity:
    max_diff: float
    tol: float
    grad_l1: float
    shapes: list[list[int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.max_diff <= self.tol and math.isfinite(self.grad_l1) and self.grad_l1 > 0


def parity_input(n: int, h: int, w: int) -> Tensor:
    """n natural-photo crops of h x w (the embedded photos; uniform noise where scikit-image is
    missing). Natural content, because SR models are made for it: on uniform noise PAN's
    output reaches 1e21 in onnxruntime and in PyTorch alike, and such chaotic values differ by
    their own size between any two runtimes, so noise made parity fail for a correct conversion."""
    from sreval.errors import DataError

    try:
        from sreval.data import EMBEDDED_FILES, _skimage_data_dir
        from sreval.io import read_image

        photos = [read_image(_skimage_data_dir() / f) for f in EMBEDDED_FILES]
    except DataError:
        return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(1234))
    crops = []
    for i in range(n):
        img = photos[i % len(photos)]
        grow = (max(0, h + 7 * n - img.shape[0]), max(0, w + 5 * n - img.shape[1]))
        img = np.pad(img, ((0, grow[0]), (0, grow[1]), (0, 0)), mode="symmetric")  # a large fixed tile
        top, left = (img.shape[0] - h) // 2 + 7 * i, (img.shape[1] - w) // 2 + 5 * i
        crops.append(torch.from_numpy(np.ascontiguousarray(img[top:top + h, left:left + w].transpose(2, 0, 1))))
    return torch.stack(crops).float()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


def _read_onnx(path: Path) -> tuple[onnx.ModelProto, str]:
    """Parse and check an ONNX file (and its external-data files, as torch's dynamo exporter
    writes them); returns the model and a SHA-256 over every byte it was read from."""
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"not a file: {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path.name}: cannot read the file ({e.strerror or e})") from None
    if not data:
        raise ModelError(f"{path.name}: empty file, not an ONNX model")
    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path.name}: not an ONNX model ({type(e).__name__})") from None
    if not model.graph.node:
        raise ModelError(f"{path.name}: not an ONNX model (no graph nodes)")
    digest = hashlib.sha256(data)
    load_external_data(model, path, digest)
    try:
        if model.ByteSize() >= PROTO_LIMIT:  # protobuf cannot serialize it: onnx checks the file
            onnx.checker.check_model(str(path))
        else:
            onnx.checker.check_model(model)
    except Exception as e:
        raise ModelError(f"{path.name}: invalid ONNX model: {_first_line(e)}") from None
    return model, digest.hexdigest()


PROTO_LIMIT = (2 << 30) - (1 << 20)  # a protobuf message must stay below 2 GiB to be serialized


def load_external_data(model: onnx.ModelProto, path: Path, digest: Any) -> None:
    """The one resolver of external data, for every tensor of the model (initializers, sparse
    ones, TENSOR / TENSORS attributes, in subgraphs of If / Loop / Scan and in functions):
    each location relative to the model's own folder, no absolute path, no '..', no symbolic
    link on any component, a regular file, `offset` and `length` honoured. The bytes go into
    the tensor (the model is then self-contained) and into `digest`, with the location, so
    that editing a data file changes the model's identity."""
    for t in sorted(_tensors(model), key=lambda t: t.name):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        try:
            offset, length = int(info.get("offset", 0)), (int(info["length"]) if "length" in info else None)
        except ValueError:
            raise ModelError(f"{path.name}: tensor {t.name!r}: bad external data offset/length {info}") from None
        target = _external_file(path, location)
        try:
            with open(target, "rb") as f:
                f.seek(offset)
                raw = f.read() if length is None else f.read(length)
        except OSError as e:
            raise ModelError(f"{path.name}: cannot read external data {location!r}: {e.strerror or e}") from None
        if length is not None and len(raw) != length:
            raise ModelError(f"{path.name}: external data {location!r} holds {len(raw)} bytes at offset {offset}, "
                             f"tensor {t.name!r} needs {length}")
        digest.update(f"{location}\0{offset}\0{len(raw)}\0".encode())
        digest.update(raw)
        t.raw_data = raw
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


def _external_file(path: Path, location: str) -> Path:
    """An external-data file beside the model, refusing anything else: no absolute paths, no
    '..', no symbolic link on any component (a linked folder inside the location would lead
    out of the model's folder), a regular file (not /dev/zero, not a FIFO)."""
    rel = Path(location)
    bad = f"{path.name}: external data {location!r} is not a regular file beside the model"
    if not location or rel.is_absolute() or ".." in rel.parts:
        raise ModelError(bad)
    cur = path.parent
    for part in rel.parts:
        cur = cur / part
        if cur.is_symlink():
            raise ModelError(bad)
    if not cur.is_file():
        raise ModelError(bad)
    return cur


def _tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor the model holds, wherever it sits."""
    out: list[onnx.TensorProto] = []

    def graph(g: onnx.GraphProto) -> None:
        out.extend(g.initializer)
        for sp in g.sparse_initializer:
            out.extend((sp.values, sp.indices))
        nodes(g.node)

    def nodes(ns: Sequence[onnx.NodeProto]) -> None:
        for n in ns:
            for a in n.attribute:
                if a.HasField("t"):
                    out.append(a.t)
                out.extend(a.tensors)
                if a.HasField("sparse_tensor"):
                    out.extend((a.sparse_tensor.values, a.sparse_tensor.indices))
                if a.HasField("g"):
                    graph(a.g)
                for sub in a.graphs:
                    graph(sub)

    graph(model.graph)
    for fn in model.functions:
        nodes(fn.node)
    return out


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]


def _image_input(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(f"{name}: not an SR model: expected one image input, found {len(inputs)}")
    inp = inputs[0]
    t = inp.type.tensor_type
    if not inp.type.HasField("tensor_type") or len(t.shape.dim) != 4:
        rank = len(t.shape.dim) if inp.type.HasField("tensor_type") else "non-tensor"
        raise ModelError(f"{name}: not an SR model: input {inp.name!r} is not a 4-D image (rank {rank})")
    if t.elem_type not in _ORT_TYPES:
        raise ModelError(
            f"{name}: input {inp.name!r} has element type "
            f"{onnx.TensorProto.DataType.Name(t.elem_type)}; float32 or float16 expected"
        )
    return inp


def _dims(vi: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in vi.type.tensor_type.shape.dim]


def _layout_from_graph(model: onnx.ModelProto, input_name: str) -> str | None:
    """NHWC when the image input goes straight into Transpose(perm 0,3,1,2), as TensorFlow
    exports do; NCHW when it goes straight into a Conv; None when the graph does not say."""
    for node in model.graph.node:
        if input_name not in node.input:
            continue
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if perm == [0, 3, 1, 2]:
                return "nhwc"
        if node.op_type == "Conv" and node.input[0] == input_name:
            return "nchw"
    return None


def _layout_channels(dims: list[int | None], layout: str) -> int | None:
    return dims[1] if layout == "nchw" else dims[3]


# --------------------------------------------------------------------------- the model


def _parse_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes"):
        return True
    if s in ("0", "false", "no"):
        return False
    raise ValueError(v)


_PARSERS: dict[str, Any] = {
    "scale": int, "range": float, "color": lambda v: str(v).lower(), "layout": lambda v: str(v).lower(),
    "preupsampled": _parse_bool, "output": int,
}


class SRModel:
    """An ONNX SR model, its conventions, its converted torch module and its ORT reference.

    `overrides` (scale, range, color, layout, preupsampled, output; None = not given) beat the
    file's `sreval.*` metadata, which beats what the shapes and a probe run show. `detect`
    runs convention detection (`sreval.detect`) on small natural-photo crops for the fields
    that neither an override nor metadata fix (range, colour order): True always, False never,
    None (the default) only for a foreign file, i.e. one without any `sreval.` metadata. A
    detected value is used only when detection is confident and the winner beats bicubic (see
    `sreval.detect`). It costs 4 to 8 onnxruntime runs on 32x32 crops: 0.6 s for FSRCNN or
    RFDN, 3.5 s for the 16.7M-parameter RRDB, on 2 busy CPU cores (photos loaded once per
    process).
    """

    def __init__(self, path: str | Path, *, device: str = "auto", detect: bool | None = None,
                 channels_last: bool | None = None, **overrides: Any):
        self.path = Path(path)
        # channels_last (NHWC) convolutions: faster with cuDNN, and measured on CPU too
        # (benchmarks/README.md); None = the default for the device.
        self.channels_last = CHANNELS_LAST_DEFAULT if channels_last is None else channels_last
        self.proto, self.sha256 = _read_onnx(self.path)
        self.device = resolve_device(device)
        self.metadata = {p.key: p.value for p in self.proto.metadata_props}
        self.opset = max(
            (o.version for o in self.proto.opset_import if o.domain in ("", "ai.onnx")), default=0
        )
        self.input = _image_input(self.proto, self.path.name)
        self.input_dims = _dims(self.input)
        unknown = sorted(set(overrides) - set(FIELDS))
        if unknown:
            raise ConfigError(f"unknown convention option(s): {', '.join(unknown)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        self.sources: dict[str, str] = {}
        self.detection: Any = None
        self.conversion_error: str | None = None
        self._parity: Parity | None = None
        self.conventions = self._conventions(given)
        if detect or (detect is None and not any(k.startswith("sreval.") for k in self.metadata)):
            self._detect()

    # ----------------------------------------------------------------- conventions

    def _given(self, name: str, overrides: dict[str, Any]) -> Any:
        """An override, else a metadata value, parsed; records where it came from."""
        for source, table, key in (("override", overrides, name), ("metadata", self.metadata, f"sreval.{name}")):
            if key in table:
                try:
                    value = _PARSERS[name](table[key])
                except (TypeError, ValueError):
                    raise ConfigError(f"{self.path.name}: {source} {key}={table[key]!r} "
                                      f"is not a valid {name}") from None
                self.sources[name] = source
                return value
        return None

    def _conventions(self, overrides: dict[str, Any]) -> Conventions:
        value_range = self._given("range", overrides)
        if value_range is None:
            value_range, self.sources["range"] = 1.0, "default"
        layout, color = self._given("layout", overrides), self._given("color", overrides)
        dtype = _ORT_TYPES[self.input.type.tensor_type.elem_type]
        self.sources.update(dtype="shape", tile="shape", batch="shape")
        first: ModelError | None = None
        for lay, col in self._layout_colors(layout, color):
            tile, batch = self._fixed_shape(lay)
            base = Conventions(scale=1, range=value_range, color=col, layout=lay, dtype=dtype,
                               tile=tile, batch=batch)
            try:
                shapes, hw = self._probe_shapes(base)
            except ProbeTimeout:
                raise
            except ModelError as e:
                first = first or e
                continue
            self.sources.setdefault("layout", "shape")
            self.sources.setdefault("color", "shape" if base.channels == 1 else "default")
            return self._from_probe(base, shapes, hw, overrides)
        assert first is not None
        raise first

    def _layout_colors(self, layout: str | None, color: str | None) -> list[tuple[str, str]]:
        """(layout, colour) pairs to probe, most likely first: one pair where the input shape
        fixes the channels, the plausible ones where it does not (all dims dynamic)."""
        dims = self.input_dims
        layouts = [layout] if layout else [lay for lay in LAYOUTS if _layout_channels(dims, lay) in (1, 3)]
        if len(layouts) != 1 and not layout:
            by_graph = _layout_from_graph(self.proto, self.input.name)
            layouts = [by_graph] + [lay for lay in LAYOUTS if lay != by_graph] if by_graph else list(LAYOUTS)
        pairs = []
        for lay in layouts:
            ch = _layout_channels(dims, lay)
            if color is not None:
                if ch is not None and ch != (1 if color in ("y", "yfull") else 3):
                    raise ModelError(f"{self.path.name}: input has {ch} channels, which does not fit colour {color!r}")
                pairs.append((lay, color))
            else:
                pairs += [(lay, "rgb")] if ch == 3 else [(lay, "y")] if ch == 1 else [(lay, "rgb"), (lay, "y")]
        return pairs

    def _fixed_shape(self, layout: str) -> tuple[tuple[int | None, int | None] | None, int | None]:
        d = self.input_dims
        h, w = (d[2], d[3]) if layout == "nchw" else (d[1], d[2])
        free = (PROBE_SIZE[0] if h is None else 1) * (PROBE_SIZE[1] if w is None else 1)
        values = math.prod(v or 1 for v in d) * free
        if values > MAX_INPUT_VALUES:
            shown = ["?" if v is None else v for v in d]
            raise ModelError(f"{self.path.name}: fixed input shape {shown} is too large to run "
                             f"({values:,} values; the limit is {MAX_INPUT_VALUES:,})")
        return ((h, w) if (h or w) else None), d[0]

    def _from_probe(self, base: Conventions, shapes: list[tuple[int, ...]], hw: tuple[int, int],
                    overrides: dict[str, Any]) -> Conventions:
        """Scale, output index and pre-upsampling from the output shapes of one probe run."""
        h, w = hw
        scale = self._given("scale", overrides)
        output = self._given("output", overrides)
        pre = self._given("preupsampled", overrides)
        ratios = [self._ratio(s, h, w, base) for s in shapes]
        images = [i for i, r in enumerate(ratios) if r is not None]
        if not images:
            raise ModelError(f"{self.path.name}: not an SR model: output shape(s) "
                             f"{[list(s) for s in shapes]} are not images of the input's channels"
                             if any(len(s) == 4 for s in shapes) else
                             f"{self.path.name}: not an SR model: output rank {len(shapes[0])}, expected an image")
        want = 1 if pre else scale
        if output is None:
            output = self._choose_output(ratios, images, want)
        elif not 0 <= output < len(shapes) or ratios[output] is None:
            raise ModelError(f"{self.path.name}: output {output} is not an image output "
                             f"(image outputs: {images})")
        ratio = ratios[output]
        assert ratio is not None
        if pre is None:
            pre = ratio == 1 and scale is not None and scale > 1
            self.sources["preupsampled"] = "shape"
        if ratio == 1 and not pre and scale is None:
            raise ModelError(f"{self.path.name}: output has the input's size: a pre-upsampled (VDSR-style) "
                             f"model? give --scale")
        if pre and ratio != 1:
            raise ModelError(f"{self.path.name}: --preupsampled, but output {output} is {ratio}x the input")
        if scale is None:
            scale, self.sources["scale"] = ratio, "shape"
        elif not pre and ratio != scale:
            raise ModelError(f"{self.path.name}: scale {scale} asked for, but output {output} is x{ratio}")
        if self.sources.get("output") is None:
            self.sources["output"] = "shape"
        return replace(base, scale=scale, output=output, preupsampled=pre)

    def _choose_output(self, ratios: list[int | None], images: list[int], want: int | None) -> int:
        if want is not None:
            match = [i for i in images if ratios[i] == want]
            if match:
                return match[0]
            same = [i for i in images if ratios[i] == 1]
            if same:  # the model returns the input's size: pre-upsampled, the scale is ours
                return same[0]
            shown = ", ".join(f"{i}: x{ratios[i]}" for i in images)
            raise ModelError(f"{self.path.name}: no output at x{want} (image outputs {shown})")
        return max(images, key=lambda i: (ratios[i], -i))

    def _ratio(self, shape: Sequence[int], h: int, w: int, conv: Conventions) -> int | None:
        """Integer upscale of an output relative to the (h, w) input, if it is an image."""
        if len(shape) != 4:
            return None
        ch = shape[1] if conv.layout == "nchw" else shape[3]
        oh, ow = (shape[2], shape[3]) if conv.layout == "nchw" else (shape[1], shape[2])
        if ch != conv.channels:
            return None
        if oh % h or ow % w or oh // h != ow // w or oh < h:
            raise ModelError(f"{self.path.name}: not an SR model: output {oh}x{ow} is not an integer "
                             f"multiple of input {h}x{w}")
        return oh // h

    def _probe_shapes(self, conv: Conventions) -> tuple[list[tuple[int, ...]], tuple[int, int]]:
        h, w = self.input_size(conv.layout, *PROBE_SIZE)
        n = conv.batch or 1
        gen = np.random.default_rng(0)
        shape = (n, conv.channels, h, w) if conv.layout == "nchw" else (n, h, w, conv.channels)
        x = (gen.random(shape) * conv.range).astype(_NP_TYPES[conv.dtype])
        sess = self._session()
        names = [o.name for o in sess.get_outputs()]
        try:
            outs = run_session(sess, names, {sess.get_inputs()[0].name: x}, PROBE_SECONDS)
        except ProbeTimeout as e:
            raise ProbeTimeout(f"{self.path.name}: {e}") from None
        except Exception as e:
            raise ModelError(f"{self.path.name}: the model failed to run: {_first_line(e)}") from None
        arrays = [np.asarray(o) for o in outs]
        for a in arrays:
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise ModelError(f"{self.path.name}: model output contains NaN or Inf")
        return [tuple(int(s) for s in a.shape) for a in arrays], (h, w)

    def _detect(self) -> None:
        """Detection at load for the fields nothing fixed (see the class docstring)."""
        from sreval.detect import DETECTABLE, adopt, choices

        fields = list(choices(self.conventions, [f for f in DETECTABLE if self.sources.get(f) == "default"]))
        if fields:
            self.conventions, self.detection = adopt(self, fields)

    def input_size(self, layout: str, h: int, w: int) -> tuple[int, int]:
        """An input size the model accepts: its fixed size where it has one, else (h, w)."""
        d = self.input_dims
        fh, fw = (d[2], d[3]) if layout == "nchw" else (d[1], d[2])
        return (fh or h, fw or w)

    def _run_checked(self, module: nn.Module, x: Tensor) -> Tensor:
        try:
            with torch.no_grad():
                y = module(x)
        except ModelError as e:
            raise ModelError(f"{self.path.name}: {e}") from None
        except Exception as e:
            raise ModelError(f"{self.path.name}: the model failed to run: {_first_line(e)}") from None
        if not torch.isfinite(y).all():
            raise ModelError(f"{self.path.name}: model output contains NaN or Inf")
        return y

    # ----------------------------------------------------------------- runtimes

    def _session(self) -> Any:
        if "_sess" not in self.__dict__:
            self.__dict__["_sess"] = open_session(self.proto, self.path.name, self.device, self.path)
        return self.__dict__["_sess"]

    def ort(self, conventions: Conventions | None = None, time_limit: float | None = None) -> Adapter:
        """The onnxruntime reference behind the adapter (no gradients)."""
        return Adapter(OrtCore(self._session(), time_limit), conventions or self.conventions)

    def _converted(self) -> nn.Module:
        if "_core" not in self.__dict__:
            from sreval.convert import to_torch

            try:
                core = to_torch(self.proto)
            except UnsupportedOperatorError as e:
                self.conversion_error = str(e)
                raise
            except ModelError as e:
                self.conversion_error = str(e)
                raise ConversionError(f"{self.path.name}: {e}") from None
            core.eval()
            # Frozen parameters: the attacks need input gradients only (1.5x faster per step).
            for p in core.parameters():
                p.requires_grad_(False)
            if self.conventions.dtype == "float16" and self.device.type == "cpu":
                core = core.float()  # CPU half kernels are slow or missing; compute in float32
            if self.channels_last and self.conventions.layout == "nchw":
                core = core.to(memory_format=torch.channels_last)
            self.__dict__["_core"] = core.to(self.device)
        return self.__dict__["_core"]

    def torch(self) -> Adapter:
        """The differentiable onnx2torch conversion behind the adapter (frozen, eval)."""
        if "_torch" not in self.__dict__:
            fp32 = self.conventions.dtype == "float16" and self.device.type == "cpu"
            adapter = Adapter(self._converted(), self.conventions, "float32" if fp32 else None,
                              channels_last=self.channels_last and self.conventions.layout == "nchw").eval()
            self.__dict__["_torch"] = adapter
        return self.__dict__["_torch"]

    def runtime(self, prefer: str = "auto") -> tuple[nn.Module, str]:
        """The module to evaluate with and its name. 'auto': the parity-checked PyTorch
        conversion, or the onnxruntime reference where onnx2torch cannot convert the model;
        'torch': the conversion or its error; 'onnxruntime': the reference, nothing converted
        (faster for clean metrics, which need no gradients)."""
        if prefer not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {prefer!r}")
        if prefer == "onnxruntime":
            return self.ort(), "onnxruntime"
        try:
            self.check_parity()
        except (UnsupportedOperatorError, ConversionError):
            if prefer == "torch":
                raise
            return self.ort(), "onnxruntime"
        return self.torch(), "torch"

    # ----------------------------------------------------------------- parity

    @property
    def parity_tol(self) -> float:
        return PARITY_TOL_FP16 if self.conventions.dtype == "float16" else PARITY_TOL

    def check_parity(self, raise_on_fail: bool = True) -> Parity:
        """Run torch and onnxruntime on two odd-sized inputs (one of batch 2) and compare.
        The result is kept: a second call costs nothing."""
        if self._parity is None:
            self._parity = self._measure_parity()
        parity = self._parity
        if raise_on_fail and not parity.ok:
            if parity.max_diff > parity.tol:
                raise ParityError(
                    f"{self.path.name}: PyTorch conversion differs from onnxruntime by "
                    f"{parity.max_diff:.3g} of the output range (tolerance {parity.tol:g})"
                )
            raise ParityError(
                f"{self.path.name}: input gradient is {'zero' if parity.grad_l1 == 0 else 'not finite'}; "
                f"the model cannot be attacked with gradients"
            )
        return parity

    def _measure_parity(self) -> Parity:
        # sizes in the pixels the adapter is fed (RGB LR); a fixed-size model gets its own size
        sizes = [(n, h, w) if self.conventions.tile is None else (n, *self._tile_lr())
                 for n, h, w in PARITY_SIZES]
        ref, mine = self.ort(time_limit=PROBE_SECONDS), self.torch()
        worst, grad = 0.0, 0.0
        for n, hh, ww in sizes:
            x = parity_input(n, hh, ww)
            y_ref = self._run_checked(ref, x)
            xt = x.to(self.device).requires_grad_(True)
            try:
                y = mine(xt)
                (gx,) = torch.autograd.grad(y.square().sum(), xt)
            except ModelError:
                raise
            except Exception as e:  # onnx2torch modules raise what torch raises
                raise ConversionError(f"{self.path.name}: the PyTorch conversion fails on a {hh}x{ww} "
                                      f"input: {_first_line(e)}") from None
            if not torch.isfinite(y).all():
                raise ModelError(f"{self.path.name}: converted model output contains NaN or Inf")
            worst = max(worst, (y.detach().cpu() - y_ref).abs().max().item())
            grad += gx.abs().sum().item()
        return Parity(worst, self.parity_tol, grad, [list(s) for s in sizes])

    def _tile_lr(self) -> tuple[int, int]:
        """An RGB input size that fills one tile of a fixed-size model exactly (free axes: the
        probe size)."""
        c = self.conventions
        assert c.tile is not None
        k = c.scale if c.preupsampled else 1
        th, tw = c.tile
        return ((th // k) if th else PROBE_SIZE[0], (tw // k) if tw else PROBE_SIZE[1])

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "path": str(self.path),
            "name": self.metadata.get("sreval.name", self.path.stem),
            "sha256": self.sha256,
            "scale": self.conventions.scale,
            "opset": self.opset,
            "conventions": self.conventions.as_dict(),
            "convention_sources": dict(self.sources),
            "metadata": self.metadata,
        }
        if self.detection is not None:
            info["detection"] = self.detection.as_dict()
        if self.conversion_error is not None:
            info["parity"] = {"checked": False, "reason": f"no PyTorch conversion ({self.conversion_error}); "
                                                          "run with onnxruntime, parity cannot be checked"}
        return info


def open_session(proto: onnx.ModelProto, name: str, device: torch.device, path: Path | None = None) -> Any:
    """An onnxruntime session of the (self-contained) proto; a proto too large to serialize
    (2 GiB and more, with its external data) is opened from its checked file instead."""
    import onnxruntime as ort

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
        raise ModelError(f"{name}: onnxruntime cannot load the model: {_first_line(e)}") from None


def load_model(spec: str | Path, *, device: str = "auto", check: bool = True, **overrides: Any) -> SRModel:
    """Open a model by path or zoo name; with `check`, verify its conversion (parity)."""
    model = SRModel(resolve_model_path(spec), device=device, **overrides)
    if check:
        model.check_parity()
    return model


def resolve_model_path(spec: str | Path) -> Path:
    """A MODEL argument: a path (with a '/' or an .onnx suffix, or an existing file) or a zoo
    name. A bare name that is both a zoo entry and a file or folder here is refused: a file
    must never silently stand in for the zoo model (write ./NAME for the file)."""
    from sreval.zoo import manifest, zoo_model_path

    path = Path(spec)
    if path.suffix == ".onnx" or "/" in str(spec) or isinstance(spec, Path) and spec.is_absolute():
        return path
    try:
        names = manifest()
    except ModelError:  # no readable manifest: a bare name can only be a file
        names = {}
    if str(spec) in names:
        if os.path.lexists(path):
            raise ModelError(f"{spec!r} is a zoo model and also a file or folder here: write ./{spec} for the "
                             f"file, or run from another folder for the zoo model")
        return zoo_model_path(str(spec))
    if path.exists():
        return path
    return zoo_model_path(str(spec))
