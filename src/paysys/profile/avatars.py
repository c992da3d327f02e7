"""Uploaded avatars (api-contracts §6): a `data:image/…;base64,…` URL → a clean WebP.

The upload is untrusted bytes that will be served publicly from our origin, so nothing of it is
kept: it is decoded with Pillow (not judged by its first bytes), must be an image of exactly the
declared type, and only its pixels survive, re-encoded as WebP of at most 512x512 with no
metadata (EXIF GPS, ICC, XMP and any trailing payload are dropped). Refusals are 400
VALIDATION_ERROR on `avatarUrl`, naming the reason (type, size, not an image).

Decoding is CPU and memory work: it runs in a small dedicated thread pool (`process`), never on
the event loop and never while the request holds a database connection. Its size is also the
bound on memory: at most `THREADS` decodes of at most `MAX_PIXELS` pixels at a time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import re
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image, ImageOps

from paysys.core.errors import ValidationFailed

FIELD = "avatarUrl"
MIB = 1024 * 1024
MAX_DECODED = 5 * MIB
# Base64 of MAX_DECODED bytes: 4 characters per 3 bytes, padded.
MAX_BASE64 = -(-MAX_DECODED // 3) * 4
MAX_SIDE = 512
# A few bytes of PNG or GIF can declare a huge canvas (a decompression bomb): refuse anything
# over 40 megapixels (a 48 MP phone photo is scaled down on decode, see `_decode`) before
# decoding. Pillow's own guard is set to the same value (it warns above it, and refuses to open
# twice as many).
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
WEBP_QUALITY = 85
THREADS = 2
# Declared media subtype → the format Pillow must detect (nothing else is even tried).
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}
TYPE_RULE = "image type must be png, jpeg, webp or gif"
PIXELS_RULE = f"image must be at most {MAX_PIXELS // 1_000_000} megapixels"

DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),", re.IGNORECASE)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_pool: ThreadPoolExecutor | None = None


@dataclass(frozen=True)
class Avatar:
    """The stored form: WebP bytes and their ETag (a content hash: same image, same tag)."""

    image: bytes
    etag: str


@dataclass(frozen=True)
class Upload:
    """A data URL that passed the cheap checks (type, size): the image is not decoded yet."""

    subtype: str
    payload: str


def is_data_url(value: str) -> bool:
    return value[:5].lower() == "data:"


def parse_data_url(value: str) -> Upload:
    """The checks that need no decoding (run in request validation): a `data:` URL of an
    allowed image type, base64, not over 5 MiB decoded. ValueError names the rule."""
    match = DATA_URL.match(value)
    if match is None:
        raise ValueError("must be a data URL: data:image/<type>;base64,<data>")
    media_type = match.group(1).strip().lower()
    params = [p.strip().lower() for p in match.group(2).split(";") if p.strip()]
    if not media_type.startswith("image/") or media_type[6:] not in FORMATS:
        raise ValueError(f"{TYPE_RULE}, not {media_type or 'unspecified'}")
    if "base64" not in params:
        raise ValueError("image data URL must be base64 encoded (;base64,)")
    payload = value[match.end() :]
    if len(payload) > MAX_BASE64:
        raise ValueError(f"image must be at most {MAX_DECODED // MIB} MiB")
    return Upload(media_type[6:], payload)


def _pool_executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="avatar")
    return _pool


async def process(upload: Upload) -> Avatar:
    """Decode, verify and re-encode in the avatar pool (see the module docstring)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool_executor(), reencode, upload)


def _refuse(message: str) -> ValidationFailed:
    return ValidationFailed(FIELD, message)


def _png_trailer(data: bytes) -> bool:
    """True when bytes follow the PNG's IEND chunk (a polyglot: PNG + HTML, zip, …). Walks the
    chunk lengths only; the decoder checks the content."""
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):  # each step advances by at least 12 bytes
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        offset += 12 + length
        if kind == b"IEND":
            return offset < len(data)
    return False  # no IEND: the decoder reports the truncation


def reencode(upload: Upload) -> Avatar:
    """Blocking: the decoded, verified image as a clean WebP (call through `process`)."""
    try:
        data = base64.b64decode(upload.payload, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse("image data is not valid base64") from None
    if len(data) > MAX_DECODED:
        raise _refuse(f"image must be at most {MAX_DECODED // MIB} MiB")
    declared = FORMATS[upload.subtype]
    detected = _detect(data)
    if detected != declared:
        raise _refuse(f"image is {detected}, not the declared image/{upload.subtype}")
    if declared == "PNG" and _png_trailer(data):
        raise _refuse("is not an image: data follows the end of the PNG")
    try:
        image = _decode(data, declared)
    except ValidationFailed:
        raise
    except Exception:  # any decoder failure on untrusted bytes: truncated, corrupt, bomb
        raise _refuse("is not a valid image (corrupt or truncated)") from None
    out = io.BytesIO()
    image.save(out, "WEBP", quality=WEBP_QUALITY)
    webp = out.getvalue()
    return Avatar(webp, hashlib.sha256(webp).hexdigest()[:32])


def _detect(data: bytes) -> str:
    """The format Pillow recognises among the four allowed ones (header parsing only)."""
    try:
        with Image.open(io.BytesIO(data), formats=list(FORMATS.values())) as probe:
            return str(probe.format)
    except Image.DecompressionBombError:  # over twice MAX_PIXELS: Pillow refuses to open it
        raise _refuse(PIXELS_RULE) from None
    except Exception:  # not an image of an allowed type (SVG, HTML, text, zip, …)
        raise _refuse(f"is not an image ({TYPE_RULE})") from None


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation before EXIF is dropped. A malformed EXIF block is only
    metadata: the image is kept as stored rather than refused."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def _decode(data: bytes, fmt: str) -> Image.Image:
    """Verify, then fully decode (a truncated image fails here) and keep only the pixels."""
    with Image.open(io.BytesIO(data), formats=[fmt]) as probe:
        if probe.width * probe.height > MAX_PIXELS:
            raise _refuse(PIXELS_RULE)
        probe.verify()  # structure and checksums (PNG CRCs) without decoding
    with Image.open(io.BytesIO(data), formats=[fmt]) as source:
        if fmt == "JPEG":
            # Let libjpeg scale by 1/2…1/8 while decoding: big photos cost a fraction.
            source.draft("RGB", (MAX_SIDE, MAX_SIDE))
        source.load()
        upright = _upright(source)
        upright.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        alpha = "A" in upright.getbands() or "transparency" in upright.info
        pixels = upright.convert("RGBA" if alpha else "RGB")
        # A new image from the raw pixels: no info, EXIF, ICC or XMP can ride along.
        return Image.frombytes(pixels.mode, pixels.size, pixels.tobytes())
