"""Small images built in memory for the avatar tests (Pillow, no files)."""

from __future__ import annotations

import base64
import io

from PIL import Image

GPS_IFD = 0x8825
MAKE = 0x010F


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def png(width: int = 800, height: int = 600, mode: str = "RGB") -> bytes:
    """A gradient (not one colour, so the WebP is not trivially small)."""
    image = Image.linear_gradient("L").resize((width, height)).convert(mode)
    return encode(image, "PNG")


def jpeg_with_gps(width: int = 640, height: int = 480) -> bytes:
    """A JPEG carrying EXIF: camera make and a GPS position."""
    exif = Image.Exif()
    exif[MAKE] = "Avatar Test Camera"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    return encode(image, "JPEG", exif=exif.tobytes())


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"
