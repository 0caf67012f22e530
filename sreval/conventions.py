"""How a model wants its input and gives its output, and the `sreval.*` ONNX metadata keys
that record it: written by the exporters (`sreval.exporters.common.export_onnx`), read by the
loader (`sreval.model.SRModel`).

The library boundary is float32 RGB NCHW in [0, 1], and an output `scale` times larger. A
model's own convention is a `Conventions`:

* value range 0..1 or 0..255, and a normalisation (`normalize`) applied before it: `none`,
  `signed` ([-1, 1]: (x - 0.5) / 0.5), `imagenet` (ImageNet mean and std: the same numbers
  on 0..1 and on 0..255 data), or any `M/S` or `M1,M2,M3/S1,S2,S3` (in [0, 1] units, RGB
  order); the model reads range x (x - mean) / std and its output is mapped back the same way;
* colour: `rgb`, `bgr`, `y` (one channel: the Y of MATLAB `rgb2ycbcr`, BT.601 studio range,
  Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 in 0..255 units; the models of the SR
  literature, VDSR, LapSRN, FSRCNN, SRCNN, were trained on it) or `yfull` (one channel: the
  full-range Y of JPEG / OpenCV `COLOR_BGR2YCrCb`, Y = 0.299 R + 0.587 G + 0.114 B; the
  OpenCV `dnn_superres` zoo). A Y model super-resolves Y; its chroma (of the same YCbCr
  flavour) is upscaled with MATLAB bicubic, and the three are converted back to RGB;
* layout NCHW or NHWC (TensorFlow-made graphs), and the output's own layout where it differs
  (`output_layout`: tf2onnx graphs such as OpenCV's dnn_superres zoo read NHWC and give NCHW);
* pre-upsampled input (VDSR style: the model takes the unrounded MATLAB-bicubic upscale and
  returns an image of the same size);
* several outputs (LapSRN's x2 and x4): the one at the target scale is used;
* float16 inputs (computed in float32 by the PyTorch module on CPU); uint8 and uint16 image
  inputs (a deployed app's): the range is then 255 or 65535 unless given, the model is fed
  rounded values (straight-through for the gradient), and integer outputs are read as such;
* a fixed input height/width (`tile`) and a fixed batch size (`batch`), from the graph; a
  minimum input side (`min_size`), a size multiple (`multiple`: windows, strided or
  pixel-unshuffled stages) and batch dependence (then `batch` 1), from probe runs.

`sreval.runtime` applies a `Conventions` around a model's core.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sreval.errors import ConfigError

COLORS = ("rgb", "bgr", "y", "yfull")
LAYOUTS = ("nchw", "nhwc")
DTYPES = ("float32", "float16", "uint8", "uint16")
INTEGER_TOPS = {"uint8": 255.0, "uint16": 65535.0}  # an integer image input: fed rounded values, this range
FIELDS = ("scale", "range", "normalize", "color", "layout", "preupsampled", "output")  # what a user may set
SIGNED_TEXTS = ("-1,1", "[-1,1]")  # how `--range` and `--normalize` write the [-1, 1] mapping
# named normalisations: (mean, std) per RGB channel, in [0, 1] units
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "signed": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
PREFIX = "sreval."


class Meta:
    """The `sreval.*` metadata keys of an ONNX file: conventions (`Meta.field(name)`), then
    identity, provenance and the Table 1 statistics."""

    NAME = "sreval.name"
    ARCH = "sreval.arch"
    LICENSE = "sreval.license"
    WEIGHTS_SOURCE = "sreval.weights_source"
    WEIGHTS_SHA256 = "sreval.weights_sha256"
    GAN_TRAINED = "sreval.gan_trained"
    PARAMS = "sreval.params"
    CONV_LAYERS = "sreval.conv_layers"
    PARAMS_CHECKPOINT = "sreval.params_checkpoint"
    CHECKPOINT = "sreval.checkpoint"  # the PyTorch checkpoint an export was made from
    EXPORTER = "sreval.exporter"  # which exporter made it (sreval.checkpoint.EXPORTERS)
    EXPORT_SIZE = "sreval.export_size"  # HxW of a fixed-size export

    @staticmethod
    def field(name: str) -> str:
        if name not in FIELDS:
            raise ConfigError(f"not a convention field: {name!r}")
        return PREFIX + name


# Keys an exporter computes; metadata given by a caller may repeat but never contradict them.
COMPUTED_KEYS = tuple(Meta.field(f) for f in FIELDS) + (
    Meta.ARCH, Meta.GAN_TRAINED, Meta.PARAMS, Meta.CONV_LAYERS, Meta.PARAMS_CHECKPOINT)


def parse_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes"):
        return True
    if s in ("0", "false", "no"):
        return False
    raise ValueError(v)


def parse_normalize(v: Any) -> str:
    """A normalisation's canonical text: a name of NORMALIZATIONS ('-1,1' is `signed`), or
    'M/S' / 'M1,M2,M3/S1,S2,S3' with finite means and positive finite stds."""
    text = str(v).strip().lower().replace(" ", "")
    if text in SIGNED_TEXTS:
        return "signed"
    if text in NORMALIZATIONS:
        return text
    try:
        mean, std = ([float(t) for t in part.split(",")] for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"normalize must be {', '.join(NORMALIZATIONS)} or MEAN/STD "
                          f"(e.g. 0.5/0.5 or 0.485,0.456,0.406/0.229,0.224,0.225), got {v!r}") from None
    if len(mean) not in (1, 3) or len(std) not in (1, 3) or not all(math.isfinite(t) for t in mean + std) \
            or not all(t > 0 for t in std):
        raise ConfigError(f"normalize: 1 or 3 finite means and positive stds, got {v!r}")
    return "/".join(",".join(f"{t:g}" for t in part) for part in (mean, std))


def normalize_values(spec: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std), three values each in RGB order, of a canonical normalisation."""
    if spec in NORMALIZATIONS:
        return NORMALIZATIONS[spec]
    mean, std = ([float(t) for t in part.split(",")] for part in spec.split("/"))
    return tuple(mean * (3 // len(mean))), tuple(std * (3 // len(std)))


# How a field's value is read from a metadata string or an option.
PARSERS: Mapping[str, Callable[[Any], Any]] = {
    "scale": int, "range": float, "normalize": parse_normalize, "color": lambda v: str(v).lower(), "layout": lambda v: str(v).lower(),
    "preupsampled": parse_bool, "output": int,
}


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
    normalize: str = "none"
    tile: tuple[int | None, int | None] | None = None
    batch: int | None = None
    output_layout: str | None = None  # None: the input's layout
    min_size: int | None = None  # smallest side the model runs on (smaller inputs are edge-padded)
    multiple: int | None = None  # sides the model runs on are multiples of this (others are edge-padded)

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not (isinstance(self.scale, int) and 1 <= self.scale <= 16):
            raise ConfigError(f"scale must be an integer in 1..16, got {self.scale!r}")
        if self.range not in (1.0, 255.0):
            raise ConfigError(f"range must be 1 or 255, got {self.range!r}")
        if self.color not in COLORS:
            raise ConfigError(f"color must be one of {', '.join(COLORS)}, got {self.color!r}")
        object.__setattr__(self, "normalize", parse_normalize(self.normalize))
        mean, _ = normalize_values(self.normalize)
        if self.channels == 1 and len(set(mean)) > 1:
            raise ConfigError(f"normalize {self.normalize} has one mean per RGB channel; a {self.color} model has one channel")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be nchw or nhwc, got {self.layout!r}")
        if self.output_layout not in (None, *LAYOUTS):
            raise ConfigError(f"output layout must be nchw or nhwc, got {self.output_layout!r}")
        if isinstance(self.output, bool) or not isinstance(self.output, int) or self.output < 0:
            raise ConfigError(f"output index must be an integer >= 0, got {self.output!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.tile is not None and (len(self.tile) != 2 or any(t is not None and t < 1 for t in self.tile)):
            raise ConfigError(f"tile must be (height, width) with sizes >= 1, got {self.tile!r}")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"fixed batch must be >= 1, got {self.batch}")
        if self.min_size is not None and self.min_size < 1:
            raise ConfigError(f"minimum size must be >= 1, got {self.min_size}")
        if self.multiple is not None and self.multiple < 1:
            raise ConfigError(f"size multiple must be >= 1, got {self.multiple}")

    @property
    def channels(self) -> int:
        return channels_of(self.color)

    @property
    def out_layout(self) -> str:
        return self.output_layout or self.layout

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tile"] = list(self.tile) if self.tile is not None else None
        return d


@dataclass(frozen=True)
class Overrides:
    """What a user fixed of a model's conventions (the CLI's --scale, --range, ... and
    --input-value; the API's keywords): None where not given, so that the file's metadata, its
    shapes or detection decide. The resolver (`sreval.resolve`) validates the values. `inputs`
    are values for a model's non-image inputs (NAME -> VALUE), bound into the graph."""

    scale: int | None = None
    range: float | None = None
    normalize: str | None = None
    color: str | None = None
    layout: str | None = None
    preupsampled: bool | None = None
    output: int | None = None
    inputs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        inputs = self.inputs.items() if isinstance(self.inputs, Mapping) else self.inputs
        object.__setattr__(self, "inputs", tuple((str(k), str(v)) for k, v in inputs))

    @classmethod
    def of(cls, value: Overrides | Mapping[str, Any] | None) -> Overrides:
        """An Overrides from itself, a mapping of field names (None values: not given) or None."""
        if value is None or isinstance(value, Overrides):
            return value or cls()
        unknown = sorted(set(value) - set(FIELDS) - {"inputs"})
        if unknown:
            raise ConfigError(f"unknown convention option(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in value.items() if v is not None})

    def given(self) -> dict[str, Any]:
        """The convention fields that were set."""
        return {k: getattr(self, k) for k in FIELDS if getattr(self, k) is not None}


def channels_of(color: str) -> int:
    return 1 if color in ("y", "yfull") else 3


def to_metadata(*, scale: int, value_range: float, color: str, layout: str = "nchw",
                preupsampled: bool = False) -> dict[str, str]:
    """The convention entries an exporter writes (validated as a `Conventions` first)."""
    c = Conventions(scale=scale, range=float(value_range), color=color, layout=layout, preupsampled=preupsampled)
    return {Meta.field("scale"): str(c.scale), Meta.field("range"): f"{c.range:g}", Meta.field("color"): c.color,
            Meta.field("layout"): c.layout, Meta.field("preupsampled"): "1" if c.preupsampled else "0"}


def has_sreval_metadata(metadata: Mapping[str, str]) -> bool:
    return any(k.startswith(PREFIX) for k in metadata)


__all__ = ["COLORS", "LAYOUTS", "DTYPES", "INTEGER_TOPS", "FIELDS", "NORMALIZATIONS", "SIGNED_TEXTS", "parse_normalize", "normalize_values", "Meta", "COMPUTED_KEYS", "PARSERS", "Conventions", "Overrides",
           "channels_of", "to_metadata", "has_sreval_metadata", "parse_bool"]
