"""Convention detection for ONNX files that do not say how they want their input.

The scale, the output to use, pre-upsampling, the layout where the shape leaves it open and
the channel count come from the graph's shapes and one probe run (`sreval.model`). What no
shape shows, the value mapping (range 0..1 or 0..255, and a normalisation: none, [-1, 1] or
ImageNet mean/std) and the colour order (RGB or BGR), is found
here by running every candidate convention through the onnxruntime reference on natural
photos (central crops of two photos of the embedded default set, the LR made from them with
MATLAB bicubic as SR test sets are) and scoring each output against the HR crop (RGB PSNR,
`scale` pixels shaved, averaged over the photos). A model fed its own convention gives a
good SR image; a wrong range gives garbage (4 to 20 dB worse on the real models), a swapped
colour order mostly a small colour shift (0.1 to 0.4 dB: rarely conclusive).

Why HR and not agreement with a bicubic upscale: measured on RFDN (a 0..255 model), the
wrong range agreed BETTER with bicubic than the right one (astronaut crop: 26.6 vs 25.4 dB)
because its output is blander, while against HR the right range wins on every photo by
4 to 7 dB; bicubic agreement also preferred the wrong colour order for IMDN.

The confidence of each field is its margin: the best score with the winning value minus the
best score with any other value, in dB. A detected value is adopted (by `SRModel` at load,
for files without `sreval.*` metadata) only when the margin is at least ADOPT_MARGIN_DB and
the winner beats a MATLAB-bicubic upscale of the same crops by at least BEAT_BICUBIC_DB,
i.e. really behaves as a trained upscaler; otherwise the default stays and the report says
detection was inconclusive. The second condition matters: fed the wrong range, a network
with a bicubic or bilinear skip (PAN, or an untrained test model) degenerates to about its
skip path, which can score better than a bad residual in the right range, but never better
than bicubic, which a trained model beats in its own convention.

Not detectable this way: studio-range (`y`) versus full-range (`yfull`) Y. An SR model maps
an affinely changed Y to an almost identically changed output, so both agree with bicubic
equally well; `y` stays the default for one-channel models and `--color yfull` selects the
OpenCV convention.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sreval.conventions import Conventions
from sreval.data import crop_center, downscale, embedded_photo
from sreval.errors import SrevalError
from sreval.evaluation import to_image, to_tensor
from sreval.io import imresize, quantize
from sreval.metrics import psnr
from sreval.onnxfile import input_affine
from sreval.runtime import ValueRange, first_line, probe_seconds

if TYPE_CHECKING:  # the model calls detection at load; detection only reads the model
    from sreval.model import SRModel

ADOPT_MARGIN_DB = 3.0
BEAT_BICUBIC_DB = 0.1
ALIKE_DB = 0.5  # values scoring this close to the winner are named as indistinguishable
CROP = 32  # LR pixels; larger than the smallest input of the efficient models (RFDN: 15)
PHOTOS = ("chelsea.png", "coffee.png")  # two of the embedded default set, at full size
DETECTABLE = ("range", "normalize", "color")


@dataclass(frozen=True)
class Candidate:
    """One convention tried: the values of the detected fields, its score or why it failed."""

    values: dict[str, Any]
    psnr: float | None
    error: str | None = None


@dataclass(frozen=True)
class FieldResult:
    value: Any
    margin_db: float
    adopted: bool
    alike: tuple[Any, ...] = ()  # other values scoring within ALIKE_DB of the winner
    by_graph: bool = False  # the graph's first step undoes this value mapping (see `_graph_pick`)

    @property
    def confidence(self) -> str:
        if self.by_graph:
            return "graph"
        if self.margin_db >= ADOPT_MARGIN_DB:
            return "high"
        return "medium" if self.margin_db >= 1.0 else "low"


@dataclass(frozen=True)
class Detection:
    """The candidates (best first, failures last) and, per field, the winner and its margin."""

    candidates: tuple[Candidate, ...]
    fields: dict[str, FieldResult]
    photos: tuple[str, ...]
    crop: int
    bicubic: float  # the same score for a MATLAB-bicubic upscale

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates and self.candidates[0].psnr is not None else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "every candidate run with onnxruntime on central LR crops of natural photos; "
                      "score = mean RGB PSNR against the HR crops (shave = scale); margin = best "
                      "score with the winning value minus best score with another value",
            "photos": list(self.photos), "crop": self.crop,
            "adopt_margin_db": ADOPT_MARGIN_DB, "beat_bicubic_db": BEAT_BICUBIC_DB, "bicubic_psnr": self.bicubic,
            "fields": {k: {"value": f.value, "margin_db": _finite(f.margin_db), "confidence": f.confidence,
                           "adopted": f.adopted, "alike": list(f.alike), "by_graph": f.by_graph}
                       for k, f in self.fields.items()},
            "candidates": [{**c.values, "psnr": _finite(c.psnr) if c.psnr is not None else None,
                            **({"error": c.error} if c.error else {})}
                           for c in self.candidates],
        }

    def summary(self) -> str:
        """One line per field, e.g. 'range 255 (high: +24.1 dB over the next best, adopted)'."""
        parts = []
        for name, f in self.fields.items():
            margin = ("only candidate that runs" if math.isinf(f.margin_db)
                      else f"{f.margin_db:+.1f} dB over the next best")
            alike = (f"; {', '.join(map(_show, f.alike))} within {ALIKE_DB:g} dB: cannot be told apart, "
                     f"--{name} chooses" if f.alike else "")
            if f.by_graph:
                margin, alike = f"the graph's first step undoes it; scores {f.margin_db:+.1f} dB over the next best", ""
            parts.append(f"{name} {_show(f.value)} ({f.confidence}: {margin}{', adopted' if f.adopted else ''}{alike})")
        best = self.best
        tail = (f"; best scores {best.psnr:.1f} dB against HR (bicubic {self.bicubic:.1f} dB)"
                if best and best.psnr is not None else "")
        return "; ".join(parts) + tail


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _show(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def choices(conv: Conventions, fields: tuple[str, ...] | list[str]) -> dict[str, list[Any]]:
    """The values each field may take for this model; fields with one value only are left out
    (the colour of a one-channel model: y vs yfull is not detectable, see the docstring)."""
    out: dict[str, list[Any]] = {}
    for f in fields:
        if f == "range":
            out[f] = [1.0, 255.0]
        elif f == "normalize":
            out[f] = ["none", "signed"] + (["imagenet"] if conv.channels == 3 else [])
        elif f == "color" and conv.channels == 3:
            out[f] = ["rgb", "bgr"]
    return out


def candidate_values(conv: Conventions, fields: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """Every combination of the values the fields may take for this model, but a
    normalisation only on the 0..1 range (deployments normalise 0..1 data; `imagenet` on
    0..255 data is the same numbers)."""
    options = choices(conv, fields)
    names = list(options)
    combos = [dict(zip(names, combo)) for combo in itertools.product(*(options[n] for n in names))]
    return [c for c in combos if c.get("normalize", conv.normalize) == "none" or c.get("range", conv.range) == 1.0]


@functools.lru_cache(maxsize=8)
def _photos(scale: int, crop: int) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
    """(name, LR, HR) per photo: a central HR crop of the full-size photo and its MATLAB
    bicubic downscale, made the way SR test sets are made (cheaper than the whole default set)."""
    out = []
    for name in PHOTOS:
        img = embedded_photo(name)
        h = min(crop * scale, img.shape[0]) // scale * scale
        w = min(crop * scale, img.shape[1]) // scale * scale
        hr = np.ascontiguousarray(crop_center(img, h, w))
        out.append((name.rsplit(".", 1)[0], downscale(hr, scale), hr))
    return tuple(out)


def _bicubic_score(scale: int, photos: tuple[tuple[str, np.ndarray, np.ndarray], ...]) -> float:
    return float(np.mean([psnr(quantize(imresize(lr, float(scale))), hr, y=False, shave=scale)
                          for _, lr, hr in photos]))


def _score(model: SRModel, conv: Conventions, photos: tuple[tuple[str, np.ndarray, np.ndarray], ...]) -> float:
    """Mean RGB PSNR (shave = scale) of the model's SR of each LR crop against its HR crop."""
    adapter = model.ort(conv, time_limit=probe_seconds())
    scores = []
    for _, lr, hr in photos:
        with torch.no_grad():
            out = adapter(to_tensor(lr))
        if not torch.isfinite(out).all():
            return -math.inf
        img = to_image(out.clamp(0.0, 1.0))
        if img.shape != hr.shape:
            raise SrevalError(f"output {img.shape[1]}x{img.shape[0]}, expected {hr.shape[1]}x{hr.shape[0]}")
        scores.append(min(psnr(img, hr, y=False, shave=conv.scale), 100.0))
    return float(np.mean(scores))


def detect(model: SRModel, fields: tuple[str, ...] | list[str] = DETECTABLE, crop: int = CROP) -> Detection:
    """Score the candidate conventions for `fields` on the photo crops; see the module
    docstring. The value mapping (range, normalisation) is scored in the model's current
    colour order first, then the other colour orders with the best mapping only (a wrong
    mapping costs 4 to 20 dB, a wrong colour order 0.1 to 0.4: the two hardly interact)."""
    base = model.conventions
    fields = list(choices(base, fields))
    photos = _photos(base.scale, crop)
    every = candidate_values(base, fields)
    first = [v for v in every if v.get("color", base.color) == base.color]
    scored = _ranked([_candidate(model, base, v, photos) for v in first])
    if len(first) < len(every):
        lead = scored[0].values if scored and scored[0].psnr is not None else None
        rest = [v for v in every if v not in first and (lead is None or all(
            v[f] == lead[f] for f in fields if f != "color"))]
        scored = _ranked(scored + [_candidate(model, base, v, photos) for v in rest])
    bicubic = _bicubic_score(base.scale, photos)
    pick = _graph_pick(model, base, scored, bicubic)
    return Detection(tuple(scored), _fields(scored, list(fields), bicubic, pick), tuple(p[0] for p in photos),
                     crop, bicubic)


def _undoes(maps: list[tuple[np.ndarray, np.ndarray]], conv: Conventions) -> bool:
    """Whether one of the graph's first input maps a * v + b turns what sreval feeds under
    `conv`, v = (p - mean) / std * range, back into p exactly (to 1e-3)."""
    return any(_inverse(a, b, conv) for a, b in maps
               if not (np.allclose(a, 1.0) and np.allclose(b, 0.0)))  # an identity step (x * 1) says nothing


def _inverse(a: np.ndarray, b: np.ndarray, conv: Conventions) -> bool:
    values = ValueRange(conv.range, conv.normalize, conv.color)
    mean, std = values.mean.reshape(-1).double().numpy(), values.std.reshape(-1).double().numpy()
    if values.plain:
        mean, std = np.zeros_like(a), np.ones_like(a)
    if a.shape != mean.shape:
        return False
    slope, offset = a * conv.range / std, b - a * conv.range * mean / std
    return bool(np.allclose(slope, 1.0, rtol=1e-3, atol=0) and np.allclose(offset, 0.0, atol=1e-3))


def _graph_pick(model: SRModel, base: Conventions, scored: list[Candidate], bicubic: float) -> Candidate | None:
    """The value mapping the graph itself names: where the image input first goes through a
    constant affine step that exactly undoes a candidate's mapping (x * 0.5 + 0.5 after a
    [-1, 1] normalisation, x * std + mean after ImageNet's, x / 255 on 0..255 data), that
    candidate, if it scores within ALIKE_DB of the best, or whatever it scores where no
    candidate beats bicubic (an untrained or unusual model: the scores say nothing). A clean
    score cannot tell the normalisations apart (SR networks are nearly equivariant under affine
    intensity changes, see `_fields`), but such a step says which one the model was built for."""
    affine = input_affine(model.proto, model.input.name, base.channels)
    ok = [c for c in scored if c.psnr is not None]
    if not affine or not ok:
        return None
    named = [c for c in ok if _undoes(affine, replace(base, **c.values))]
    if not named:
        return None
    assert named[0].psnr is not None and ok[0].psnr is not None
    informative = ok[0].psnr >= bicubic + BEAT_BICUBIC_DB
    return named[0] if named[0].psnr >= ok[0].psnr - ALIKE_DB or not informative else None


def _candidate(model: SRModel, base: Conventions, values: dict[str, Any],
               photos: tuple[tuple[str, np.ndarray, np.ndarray], ...]) -> Candidate:
    try:
        return Candidate(values, _score(model, replace(base, **values), photos))
    except SrevalError as e:
        return Candidate(values, None, first_line(e, 200))
    except Exception as e:  # onnxruntime refuses a candidate (e.g. a value it cannot take)
        return Candidate(values, None, f"{type(e).__name__}: {first_line(e, 200) if str(e) else ''}")


def _ranked(scored: list[Candidate]) -> list[Candidate]:
    return sorted(scored, key=lambda c: (c.psnr is None, -(c.psnr if c.psnr is not None else 0.0)))


def _fields(scored: list[Candidate], fields: list[str], bicubic: float,
            pick: Candidate | None = None) -> dict[str, FieldResult]:
    """Per field, the best candidate's value and its margin over the best candidate with
    another value. A normalisation other than `none` is measured against `none` only: SR
    networks are nearly equivariant under affine changes of intensity, so `signed` and
    `imagenet` score alike (0.2 dB on CARN-M) while `none` in their place costs 7 dB; the
    winner among them is adopted and the others are named as alike."""
    ok = [c for c in scored if c.psnr is not None]
    out: dict[str, FieldResult] = {}
    if not ok:
        return out
    best = ok[0]
    assert best.psnr is not None
    for f in fields:
        win = best.values[f]
        others = [c for c in ok if c.values[f] != win]
        rivals = [c.psnr for c in others if f != "normalize" or win == "none" or c.values[f] == "none"]
        margin = best.psnr - max(rivals) if rivals else math.inf  # type: ignore[type-var]
        adopted = margin >= ADOPT_MARGIN_DB and best.psnr >= bicubic + BEAT_BICUBIC_DB
        alike = tuple(dict.fromkeys(c.values[f] for c in others if best.psnr - c.psnr < ALIKE_DB))  # type: ignore[operator]
        out[f] = FieldResult(win, margin, adopted, alike)
    if pick is not None and pick is not best:  # the graph names another mapping among those alike
        assert pick.psnr is not None
        for f in set(fields) & {"range", "normalize"}:
            others = [c.psnr for c in ok if c.values[f] != pick.values[f]]
            out[f] = FieldResult(pick.values[f], pick.psnr - max(others) if others else math.inf, True, (), True)
    elif pick is not None:
        for f in set(fields) & {"range", "normalize"}:
            out[f] = replace(out[f], adopted=True, alike=(), by_graph=True)
    return out


def adopt(model: SRModel, fields: list[str]) -> tuple[Conventions, Detection | None]:
    """Detection at load: the model's conventions with the confidently detected fields
    replaced (their source becomes 'detected'); unchanged when detection cannot run."""
    try:
        det = detect(model, fields)
    except SrevalError:  # no photo (scikit-image missing), or the model refuses the crop
        return model.conventions, None
    changes = {f: r.value for f, r in det.fields.items() if r.adopted}
    for f in changes:
        model.sources[f] = "detected"
    return replace(model.conventions, **changes), det


def ambiguity(det: Detection | None) -> str | None:
    """What a user must be told after detection at load: a trained model (it beats bicubic)
    whose value mapping scores alike with and without a normalisation. The clean score cannot
    tell them apart, the attack's numbers can differ (the budget is in other units inside)."""
    f = det.fields.get("normalize") if det is not None else None
    best = det.best if det is not None else None
    if f is None or not f.alike or best is None or best.psnr is None or best.psnr < det.bicubic + BEAT_BICUBIC_DB:
        return None
    values = ", ".join(map(_show, (f.value, *f.alike)))
    return (f"the input normalisation cannot be told apart from clean outputs ({values} score within "
            f"{ALIKE_DB:g} dB); '{_show(f.value if f.adopted else 'none')}' is used: give --range -1,1 or "
            f"--normalize if the model reads another")


WEAK_DB = 1.0  # a best score this far below bicubic's is a warning


def weakness(det: Detection | None) -> str | None:
    """The warning for a model that, in the best convention found, scores far below a bicubic
    upscale of the same photos: a trained SR model beats bicubic, so either a convention is
    still wrong (range, normalisation, colour, layout) or the model is not a trained upscaler."""
    best = det.best if det is not None else None
    if best is None or best.psnr is None or best.psnr >= det.bicubic - WEAK_DB:
        return None
    return (f"in the best convention found the model scores {best.psnr:.1f} dB on natural photos, "
            f"{det.bicubic - best.psnr:.1f} dB below a bicubic upscale ({det.bicubic:.1f} dB): a convention may "
            f"still be wrong (see `sreval inspect`; --range, --normalize, --color, --layout), or the model is "
            f"not a trained upscaler")


def propose(model: SRModel) -> Detection:
    """`sreval inspect`: detection of every detectable field, whatever fixed it (the one run
    at load is reused where it covered them all)."""
    done = model.detection
    if done is not None and set(done.fields) >= set(choices(model.conventions, DETECTABLE)):
        return done
    return detect(model, DETECTABLE)
