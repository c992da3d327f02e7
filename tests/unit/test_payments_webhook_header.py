"""The PSP-Signature parser (api-contracts §4): any malformed header, non-ASCII digits in the
timestamp included, is 400 INVALID_SIGNATURE, never a 500 (`int("²")` raises, `int("٣")` is 3)."""

from __future__ import annotations

import time

import pytest

from paysys.core.errors import AppError
from paysys.payments import webhooks

SECRET = "whsec-test"
BODY = b'{"eventId": "e"}'


@pytest.mark.parametrize(
    "header",
    [
        "t=²",
        "t=²,v1=" + "a" * 64,
        "t=٣,v1=" + "a" * 64,
        "t=\uff11,v1=" + "a" * 64,  # fullwidth 1
        "t=1e9,v1=" + "a" * 64,
        "t=" + "9" * 13 + ",v1=" + "a" * 64,
        "t=,v1=",
        "v1=" + "a" * 64,
        "\x00",
        "",
    ],
)
def test_malformed_headers_are_invalid_signatures(header: str) -> None:
    with pytest.raises(AppError) as info:
        webhooks.verify(BODY, header, SECRET)
    assert (info.value.status, info.value.code) == (400, "INVALID_SIGNATURE")


def test_a_real_signature_still_passes() -> None:
    now = int(time.time())
    assert webhooks.verify(BODY, webhooks.sign(BODY, SECRET, now), SECRET) == now
