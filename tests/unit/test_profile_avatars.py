"""The avatar rules of api-contracts §6 without a server: data URL checks, decode, verify and
re-encode (the e2e test covers the route, the gateway and storage)."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from PIL import Image

from paysys.core.errors import ValidationFailed
from paysys.profile import avatars
from paysys.profile.validation import validate_avatar_url
from tests.support.images import GPS_IFD, encode, jpeg_with_gps, png


def _upload(data: bytes, subtype: str = "png") -> avatars.Upload:
    return avatars.Upload(subtype, base64.b64encode(data).decode())


def _refused(upload: avatars.Upload) -> str:
    with pytest.raises(ValidationFailed) as caught:
        avatars.reencode(upload)
    assert caught.value.code == "VALIDATION_ERROR"
    assert caught.value.message.startswith("avatarUrl: ")
    return caught.value.message


def _webp(avatar: avatars.Avatar) -> Image.Image:
    image = Image.open(io.BytesIO(avatar.image))
    assert image.format == "WEBP"
    return image


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("data:image/svg+xml;base64,PHN2Zy8+", "not image/svg+xml"),
        ("data:text/html;base64,PGgxPg==", "not text/html"),
        ("data:;base64,AAAA", "not unspecified"),
        ("data:image/png,rawbytes", "base64"),
        ("data:image/png;base64", "must be a data URL"),
        ("data:image/png;base64," + "A" * (avatars.MAX_BASE64 + 4), "at most 5 MiB"),
    ],
)
def test_data_url_checks_name_the_rule(value: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        validate_avatar_url(value)
    assert reason in str(caught.value)


def test_accepted_avatar_url_forms() -> None:
    upload = avatars.parse_data_url("DATA:Image/JPEG;charset=x;BASE64,AAAA")
    assert upload == avatars.Upload("jpeg", "AAAA")
    own = "/api/profile/avatar/0b6f4f1e-8d7e-4c1a-9a57-3f3c8e1f2a10?v=" + "0" * 32
    assert validate_avatar_url(own) == own
    assert validate_avatar_url("https://cdn.example.com/a.png") == "https://cdn.example.com/a.png"
    with pytest.raises(ValueError, match="http"):
        validate_avatar_url("/api/profile/avatar/x?v=1")


def test_png_becomes_a_small_webp_with_a_stable_etag() -> None:
    avatar = avatars.reencode(_upload(png(1600, 900)))
    image = _webp(avatar)
    assert image.size == (512, 288)  # aspect kept
    assert avatar.etag == avatars.reencode(_upload(png(1600, 900))).etag
    assert len(avatar.etag) == 32
    small = _webp(avatars.reencode(_upload(png(100, 50))))
    assert small.size == (100, 50)  # never enlarged


def test_jpeg_metadata_is_dropped_and_orientation_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    exif.get_ifd(GPS_IFD)[1] = "N"
    source = Image.linear_gradient("L").resize((600, 300)).convert("RGB")
    rotated = avatars.reencode(_upload(encode(source, "JPEG", exif=exif.tobytes()), "jpeg"))
    image = _webp(rotated)
    assert image.size == (256, 512)  # upright before the orientation tag was dropped
    plain = _webp(avatars.reencode(_upload(jpeg_with_gps(), "jpeg")))
    assert dict(plain.getexif()) == {}
    assert not {"exif", "xmp", "icc_profile"} & set(plain.info)


def test_transparency_gif_and_webp_sources() -> None:
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    assert _webp(avatars.reencode(_upload(encode(rgba, "PNG")))).mode == "RGBA"
    gif = encode(Image.linear_gradient("L").convert("P"), "GIF")
    assert _webp(avatars.reencode(_upload(gif, "gif"))).size == (256, 256)
    webp = encode(Image.new("RGB", (700, 700), "blue"), "WEBP")
    assert _webp(avatars.reencode(_upload(webp, "webp"))).size == (512, 512)


def test_refusals_name_the_reason() -> None:
    good = png(200, 200)
    assert "not valid base64" in _refused(avatars.Upload("png", "@@@@"))
    assert "is not an image" in _refused(_upload(b"just some text, not a PNG at all"))
    assert "is not an image" in _refused(_upload(b'<svg xmlns="http://www.w3.org/2000/svg"/>'))
    jpeg = jpeg_with_gps(64, 64)
    assert "is JPEG, not the declared image/png" in _refused(_upload(jpeg, "png"))
    assert "corrupt or truncated" in _refused(_upload(good[: len(good) // 2]))
    assert "corrupt or truncated" in _refused(_upload(good[:-12]))  # IEND missing
    # Polyglot: a complete PNG followed by an HTML/zip payload.
    polyglot = good + b"<html><script>alert(1)</script></html>PK\x03\x04"
    assert "data follows the end of the PNG" in _refused(_upload(polyglot))
    oversize = good + b"\0" * avatars.MAX_DECODED
    assert "at most 5 MiB" in _refused(_upload(oversize))


def test_decompression_bombs_are_refused_before_decoding() -> None:
    bomb = encode(Image.new("1", (8000, 8000)), "PNG")  # 64 MP in a few kilobytes
    assert len(bomb) < 100_000
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow warns, our cap refuses
        assert "at most 40 megapixels" in _refused(_upload(bomb))
    huge = encode(Image.new("1", (10000, 9000)), "PNG")  # 90 MP: Pillow itself refuses
    assert "at most 40 megapixels" in _refused(_upload(huge))


def test_process_runs_in_the_avatar_pool() -> None:
    avatar = asyncio.run(avatars.process(_upload(png(32, 32))))
    assert _webp(avatar).size == (32, 32)


def test_unusable_orientation_metadata_keeps_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(image: Image.Image) -> Image.Image:
        raise SyntaxError("bad EXIF")

    monkeypatch.setattr(avatars.ImageOps, "exif_transpose", broken)
    assert _webp(avatars.reencode(_upload(jpeg_with_gps(600, 300), "jpeg"))).size == (512, 256)
