"""Body templates: placeholders found in order, values escaped for the content type so a
value never changes the body's structure; routes checked at add."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest

from vault.errors import InvalidArgumentError
from vault.forward.filtering import pan_sites, parse_path
from vault.forward.routes import RouteSpec, check_spec
from vault.forward.template import BodyFormat, body_format, render, tokens_in
from vault.secrets import SecretBytes

HOSTILE = 'a"b\\c\n&d=e+f%g</script>'


def test_tokens_in_order_once():
    body = b'{"a":"{{token:tok_a}}","b":"{{token:4000001234567899}}","c":"{{token:tok_a}}"}'
    assert tokens_in(body) == ["tok_a", "4000001234567899"]
    assert tokens_in(b"no placeholders {{token:}} {{ token:x }}") == []


def test_json_escaping_keeps_the_structure():
    body = b'{"name":"{{token:t1}}","n":1}'
    out = render(body, {"t1": HOSTILE}, BodyFormat.JSON)
    assert json.loads(out) == {"name": HOSTILE, "n": 1}


def test_form_encoding_keeps_the_fields():
    body = b"name={{token:t1}}&amount=10"
    out = render(body, {"t1": HOSTILE}, BodyFormat.FORM)
    assert parse_qs(out.decode()) == {"name": [HOSTILE], "amount": ["10"]}


@pytest.mark.parametrize(
    ("content_type", "fmt"),
    [
        ("application/json", BodyFormat.JSON),
        ("application/json; charset=utf-8", BodyFormat.JSON),
        ("application/vnd.api+json", BodyFormat.JSON),
        ("application/x-www-form-urlencoded", BodyFormat.FORM),
    ],
)
def test_body_formats(content_type, fmt):
    assert body_format(content_type) is fmt


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/xml"])
def test_other_content_types_are_refused(content_type):
    with pytest.raises(InvalidArgumentError) as raised:
        body_format(content_type)
    assert raised.value.violations[0].field == "headers"


def test_too_many_tokens_and_too_large_bodies():
    many = "".join(f"{{{{token:tok_{i}}}}}" for i in range(33)).encode()
    with pytest.raises(InvalidArgumentError):
        tokens_in(many)
    with pytest.raises(InvalidArgumentError):
        tokens_in(b"x" * (256 * 1024 + 1))


def test_pan_sites_follow_paths_and_skip_non_pans():
    doc = {"card": {"number": "4242 4242 4242 4242", "last4": "4242"},
           "items": [{"pan": 4111111111111111}, {"pan": "4111111111111112"}]}  # fmt: skip
    assert [k for _, k in pan_sites(doc, parse_path("card.number"))] == ["number"]
    [(parent, key)] = pan_sites(doc, parse_path("$.items.*.pan"))
    assert parent is doc["items"][0]  # the second fails Luhn
    assert key == "pan"
    assert pan_sites(doc, parse_path("card.last4")) == []
    assert pan_sites(doc, parse_path("missing.path")) == []
    with pytest.raises(ValueError, match="path"):
        parse_path("a..b")


def test_route_checks_name_each_field():
    with pytest.raises(InvalidArgumentError) as raised:
        check_spec(
            RouteSpec(
                name="Bad Name",
                url="http://processor.example/pay",
                method="TRACE",
                allow_headers=("host",),
                timeout=0,
                max_response_bytes=0,
                client_cert_pem=b"x",
            )
        )
    fields = {v.field for v in raised.value.violations}
    assert fields == {"name", "url", "method", "allow_header", "timeout", "max_response_bytes",
                      "client_cert"}  # fmt: skip
    text = str([v.description for v in raised.value.violations])
    assert "secret" not in text


@pytest.mark.parametrize(
    "url",
    ["https://user:pw@processor.example/", "https:///nohost", "ftp://processor.example/",
     "https://processor.example/#frag", "processor.example/pay"],
)  # fmt: skip
def test_only_plain_https_urls(url):
    with pytest.raises(InvalidArgumentError):
        check_spec(RouteSpec(name="r", url=url))


def test_a_key_without_its_cert_is_refused():
    with pytest.raises(InvalidArgumentError):
        check_spec(RouteSpec(name="r", url="https://p.example/", client_key_pem=SecretBytes(b"k")))
    check_spec(RouteSpec(name="r", url="https://p.example:8443/v1/charges"))
