"""The floor's shared pieces: one URL for a listen address, one bearer header, one table of distinct exit codes."""

from __future__ import annotations

import re

import pytest

from headroom import errors
from headroom.auth import bearer_headers
from headroom.settings_base import base_url
from tests.helpers import REPO


@pytest.mark.parametrize(("listen", "url"), [
    ("127.0.0.1:9841", "http://127.0.0.1:9841"),
    ("0.0.0.0:9841", "http://127.0.0.1:9841"),  # every IPv4 address: dial loopback
    ("[::]:9842", "http://[::1]:9842"),  # every IPv6 address: dial IPv6 loopback, not the unspecified address
    ("[::1]:9840", "http://[::1]:9840"),
    ("10.1.2.3:80", "http://10.1.2.3:80"),
])
def test_base_url_dials_what_a_server_on_listen_accepts(listen, url):
    assert base_url(listen) == url


def test_base_url_prefers_the_given_url_without_its_trailing_slash():
    assert base_url("127.0.0.1:9841", "http://guard.example:80/") == "http://guard.example:80"


def test_base_url_names_a_bad_listen_address():
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        base_url("localhost")


def test_bearer_headers_only_with_a_token():
    assert bearer_headers("t" * 20) == {"Authorization": "Bearer " + "t" * 20}
    assert bearer_headers(None) == {} and bearer_headers("") == {}


def exit_codes() -> dict[str, int]:
    return {name: value for name, value in vars(errors).items() if name.startswith("EXIT_")}


def test_every_exit_code_has_its_own_number():
    codes = exit_codes()
    assert len(set(codes.values())) == len(codes), codes
    assert codes["EXIT_UNREACHABLE"] != codes["EXIT_CONFIG"]


def test_the_readme_table_lists_every_exit_code_by_number_and_name():
    readme = (REPO / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n###", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| code")]
    for name, value in exit_codes().items():
        assert any(re.search(rf"\b{value}\b", row.split("|")[1]) and f"`{name}`" in row for row in rows), \
            f"README's exit-code table has no row for {value} {name}"
