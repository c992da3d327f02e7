"""Pure rules of the profile service: validators, preference merging, change lists."""

from __future__ import annotations

import pytest

from paysys.profile import validation as v
from paysys.profile.schemas import DEFAULT_PREFERENCES
from paysys.profile.service import apply_patch, changed_paths, merge_preferences


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155550100", "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("+44.20.7183.8750", "+442071838750"),
        ("+49 30 901820", "+4930901820"),
        ("+12345678", "+12345678"),
        ("+123456789012345", "+123456789012345"),
    ],
)
def test_phone_accepts(raw: str, expected: str) -> None:
    assert v.normalize_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "+",
        "14155550100",
        "+1234567",
        "+1234567890123456",
        "+0412345678",
        "+1-415-CALL",
        "++14155550100",
        "+1 415\n5550100x",
        "+1/415/5550100",
    ],
)
def test_phone_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match=r"E\.164"):
        v.normalize_phone(raw)


@pytest.mark.parametrize(
    "url",
    [
        "http://a.b",
        "https://example.com/x.png?q=1#f",
        "HTTPS://EXAMPLE.COM/",
        "https://[::1]:8443/a",
        "https://a.b/p%20q/r?s=t&u=/v#w",
    ],
)
def test_url_accepts(url: str) -> None:
    assert v.validate_http_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "ftp://a.b/c",
        "//a.b/c",
        "https:///x",
        "https://a b.c/",
        "http://a.b/\x00",
        "https://[::1/",
        "https://u@a.b/",
        "https://a.b:0/",
        "https://a.b/" + "x" * 2048,
        "file:///etc/passwd",
        "a.b/c",
        "https://a.b/ä",  # non-ASCII must be percent-encoded, as in any URI
        "https://a.b/%7Q",  # not a percent-encoding
        "https://a.b/<x>",
        "https://a.b/?q#f#g",
    ],
)
def test_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        v.validate_http_url(url)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("en", "en"),
        ("EN", "en"),
        ("en-us", "en-US"),
        ("en_GB", "en-GB"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("fil", "fil"),
        ("sr-Latn", "sr-Latn"),
    ],
)
def test_language(raw: str, expected: str) -> None:
    assert v.normalize_language(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "e", "english", "en-", "en-USA1", "1en", "en-US-x-private", "en US"]
)
def test_language_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match="BCP-47"):
        v.normalize_language(raw)


def test_timezone_and_currency() -> None:
    assert v.validate_timezone("Europe/Paris") == "Europe/Paris"
    assert v.validate_timezone("UTC") == "UTC"
    for bad in ("Europe/Atlantis", "utc", "", "/etc/localtime", "Europe/../UTC"):
        with pytest.raises(ValueError, match="IANA"):
            v.validate_timezone(bad)
    assert v.normalize_currency("eur") == "EUR"
    assert v.normalize_currency("JPY") == "JPY"
    for bad in ("XYZ", "EU", "EURO", "€"):
        with pytest.raises(ValueError, match="ISO 4217"):
            v.normalize_currency(bad)


def test_merge_preferences_fills_defaults_and_ignores_unknown_keys() -> None:
    assert merge_preferences(None) == DEFAULT_PREFERENCES
    assert merge_preferences({}) is not DEFAULT_PREFERENCES
    merged = merge_preferences(
        {"theme": "dark", "notifications": {"sms": True, "pager": 1}, "old": 1}
    )
    assert merged["theme"] == "dark"
    assert merged["notifications"] == {"email": True, "push": False, "sms": True}
    assert "old" not in merged
    assert DEFAULT_PREFERENCES["notifications"]["sms"] is False  # defaults never mutated


def test_apply_patch_deep_merges_and_none_removes() -> None:
    stored = {"theme": "dark", "notifications": {"sms": True, "push": True}}
    assert apply_patch(stored, {"notifications": {"email": False}}) == {
        "theme": "dark",
        "notifications": {"sms": True, "push": True, "email": False},
    }
    assert apply_patch(stored, {"theme": None, "notifications": {"sms": None, "push": None}}) == {}
    assert apply_patch(stored, {"notifications": None}) == {"theme": "dark"}
    assert stored == {"theme": "dark", "notifications": {"sms": True, "push": True}}


def test_changed_paths() -> None:
    before = merge_preferences({})
    after = merge_preferences({"language": "fr", "notifications": {"push": True}})
    assert changed_paths(before, after, "preferences.") == {
        "preferences.language": {"old": "en", "new": "fr"},
        "preferences.notifications.push": {"old": False, "new": True},
    }
    assert changed_paths(before, before) == {}
