"""The cached-domain fast path of `normalise` agrees with a plain email-validator call."""

from __future__ import annotations

import pytest

from campaign.addresses import AddressError, _validate, normalise

CASES = [
    "Gp-rk@Prokuror.KZ",
    "x@bücher.de",
    "a..b@x.org",
    "ü@x.org",
    "a@-x.org",
    "a@x",
    "a" * 70 + "@x.org",
    "a" * 64 + "@x.org",
    "a@" + "b" * 250 + ".org",
    "b" * 64 + "@" + "c" * 60 + "." + "d" * 60 + "." + "e" * 60 + ".org",
    ".a@x.org",
    "a.@x.org",
    "a@x..org",
    "a@x.org.",
    "a@localhost",
    "a@x.invalid",
    "user+tag@sub.domain.co.uk",
    "A@EXAMPLE.ORG",
    "a@ä.de",
    "x@x.local",
    "Postmaster@Example.ORG",
    "INFO@x.org",
    "a b@x.org",
    "a@b@x.org",
    "@x.org",
    "a@",
    "ioana.strasser-100000@example.org",
    "a+b.c-d_e@sub.example.co.uk",
    "a@xn--bcher-kva.example",
]


def outcome(function: object, address: str) -> str:
    try:
        return str(function(address))  # type: ignore[operator]
    except AddressError as err:
        return f"refused: {err}"


@pytest.mark.parametrize("address", CASES)
def test_fast_path_gives_email_validators_answer(address: str) -> None:
    assert outcome(normalise, address) == outcome(lambda a: _validate(a).ascii_email, address)
