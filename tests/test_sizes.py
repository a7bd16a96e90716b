"""The one size parser: 14GiB, 512MiB, 14G (1024-based, as systemd reads it), 14GB (10^9); everything else rejected."""

from __future__ import annotations

import pytest

from headroom.sizes import format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [
        ("14GiB", 14 * 2**30),
        ("512MiB", 512 * 2**20),
        ("14G", 14 * 2**30),
        ("14g", 14 * 2**30),
        ("14GB", 14 * 10**9),
        ("1.5GiB", int(1.5 * 2**30)),
        ("100KB", 100_000),
        ("4096", 4096),
        ("4096B", 4096),
        (" 2 TiB ", 2 * 2**40),
        (123, 123),
    ],
)
def test_parse_size_accepts(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "14 gigs", "-1GiB", "14XB", "1.5", "14iB", "0x10", "1e9", True, -5])
def test_parse_size_rejects_with_a_clear_message(text):
    with pytest.raises(ValueError, match="size|negative|whole"):
        parse_size(text)


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("30s", 30), ("1.5h", 5400), ("250ms", 0.25), ("45", 45), (7, 7.0), ("2d", 172800)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "10 minutes", "-5s", "m"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_size():
    assert (format_size(None), format_size(512), format_size(1536 * 2**20)) == ("-", "512 B", "1.5 GiB")


@pytest.mark.parametrize("text", ["9" * 400, "9" * 400 + "GiB", "1." + "9" * 400 + "G", "1e400", "14G\n", "\u0663GiB", False])
def test_parse_size_rejects_absurd_input_with_a_value_error(text):
    """400 digits once raised OverflowError (a 500 in the APIs); now a ValueError like any other bad size."""
    with pytest.raises(ValueError, match="size|whole"):
        parse_size(text)


def test_parse_size_grammar_is_the_published_pattern():
    """What the OpenAPI schemas publish (SIZE_PATTERN) is exactly what parse_size accepts."""
    import re

    from headroom.sizes import SIZE_PATTERN

    samples = ["14GiB", "14gib", "14 G", "1.5GiB", "100KB", "4096", "4096B", "1.5", "14iB", "GiB", " 2 TiB ", "1.5B", "0x10"]
    for text in samples:
        try:
            parse_size(text)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted == bool(re.fullmatch(SIZE_PATTERN, text)), text
