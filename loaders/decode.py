"""Decoders shared by both loaders: bytes of a member -> a Python value.

``decode=None`` keeps raw bytes.  ``decode="default"`` decodes by extension
(the last part of it, lowercased: ``seg.png`` decodes as ``png``):

=================================  ==========================================
extension                          value
=================================  ==========================================
jpg jpeg png ppm pgm pbm bmp gif   ``PIL.Image.Image`` (converted to RGB with
tif tiff webp                      ``"rgb"``, kept as stored with ``"pil"``)
npy                                ``numpy.ndarray`` (``allow_pickle=False``)
cls cls2 index inx id              ``int``
json jsn                           parsed JSON
txt text                           ``str`` (UTF-8)
pth pt                             ``torch.load(..., weights_only=True)``
anything else                      raw ``bytes``
=================================  ==========================================

Pickle-based formats (``.pyd``, ``.pickle``) are never decoded by default.
``decode`` may also be a dict ``{extension: function(bytes)}`` merged over
the defaults, or a function ``sample -> sample`` that does everything.
Pillow's decompression-bomb limit stays on.
"""

from __future__ import annotations

import io
import json
from typing import Any, Callable, Dict, Mapping, Optional, Union

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "ppm", "pgm", "pbm", "pnm", "bmp", "gif", "tif", "tiff", "webp")


class DecodeError(ValueError):
    """A member whose bytes do not decode; names the sample and member."""


def decode_image(data: bytes, mode: Optional[str] = "RGB") -> Any:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert(mode) if mode and image.mode != mode else image


def decode_npy(data: bytes) -> Any:
    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_int(data: bytes) -> int:
    return int(data.decode("ascii").strip())


def decode_json(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))


def decode_text(data: bytes) -> str:
    return data.decode("utf-8")


def decode_torch(data: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def default_decoders(image_mode: Optional[str] = "RGB") -> Dict[str, Callable[[bytes], Any]]:
    decoders: Dict[str, Callable[[bytes], Any]] = {ext: (lambda d, m=image_mode: decode_image(d, m)) for ext in IMAGE_EXTENSIONS}
    decoders.update(
        npy=decode_npy,
        cls=decode_int, cls2=decode_int, index=decode_int, inx=decode_int, id=decode_int,
        json=decode_json, jsn=decode_json,
        txt=decode_text, text=decode_text,
        pth=decode_torch, pt=decode_torch,
    )
    return decoders


DecodeSpec = Union[None, str, Mapping[str, Callable[[bytes], Any]], Callable[[Dict[str, Any]], Dict[str, Any]]]


class Decoder:
    """A picklable ``sample -> sample`` function built from a ``decode`` spec."""

    def __init__(self, spec: DecodeSpec = None) -> None:
        self.spec = spec
        self.function: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None
        self.by_extension: Optional[Dict[str, Callable[[bytes], Any]]] = None
        if spec is None or spec == "raw":
            return
        if isinstance(spec, str):
            modes = {"default": "RGB", "rgb": "RGB", "pil": None, "l": "L"}
            if spec.lower() not in modes:
                raise ValueError(f"decode={spec!r}: expected None, 'raw', 'default', 'rgb', 'pil', 'l', a dict or a function")
            self.by_extension = default_decoders(modes[spec.lower()])
        elif isinstance(spec, Mapping):
            self.by_extension = {**default_decoders(), **{k.lower(): v for k, v in spec.items()}}
        elif callable(spec):
            self.function = spec
        else:
            raise TypeError(f"decode must be None, a string, a dict or a callable, not {type(spec).__name__}")

    @property
    def active(self) -> bool:
        """False when samples pass through unchanged (raw bytes)."""
        return self.function is not None or self.by_extension is not None

    def __call__(self, sample: Dict[str, Any]) -> Dict[str, Any]:
        if self.function is not None:
            return self.function(sample)
        if self.by_extension is None:
            return sample
        for ext, value in sample.items():
            if ext.startswith("__") or not isinstance(value, (bytes, bytearray, memoryview)):
                continue
            decoder = self.by_extension.get(ext.rsplit(".", 1)[-1].lower())
            if decoder is None:
                continue
            try:
                sample[ext] = decoder(bytes(value))
            except Exception as exc:
                raise DecodeError(
                    f"sample {sample.get('__key__')!r}: cannot decode member .{ext} "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
        return sample
