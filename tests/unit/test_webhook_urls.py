"""Which webhook endpoint URLs are acceptable: syntax, and public addresses only (SSRF)."""

import ipaddress

import pytest

from contracts.webhooks import endpoint_url_problem, is_public_address


@pytest.mark.parametrize(
    "url",
    [
        "https://merchant.example/webhooks",
        "http://merchant.example:8080/hooks?source=mypay",
        "https://93.184.215.14/hook",
        "https://[2606:4700:4700::1111]/hook",
        "https://xn--bcher-kva.example./hook",
        "https://bücher.example/hook",
        "http://localhost:8080/hook",
        # IDNA 2008 names the sender reaches, which Python's IDNA 2003 codec refuses
        "https://straße.de/hook",
        "https://xn--strae-oqa.de/hook",
        "https://βόλος.gr/hook",
        "https://ශ්\u200dරී.lk/hook",
        "https://host_name.internal/hook",
    ],
)
def test_acceptable_urls(url: str) -> None:
    assert endpoint_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://merchant.example/hook", "http:// or https://"),
        ("merchant.example/hook", "http:// or https://"),
        ("https:///hook", "must name a host"),
        ("https://user:pass@merchant.example/hook", "credentials"),
        ("https://merchant.example:99999/hook", "not a valid URL"),
        ("https://merchant.example/a b", "whitespace"),
        # as the API's text fields: the CLI took these (`merchant create --webhook-url`), which
        # the API then refused when the merchant saved the same URL (taint review)
        ("https://merchant.example/hook\u009b2J", "control characters"),
        ("https://merchant.example/\u202egpj.exe/hook", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("https://merchant.example/" + "a" * 2048, "at most 2048"),
        # the byte 0xFF of a command line (surrogate-escaped) raised UnicodeEncodeError in
        # httpx's parse: `payouts merchant create --webhook-url` ended in a traceback
        ("https://merchant.example/hooks/\udcff", "not UTF-8"),
        ("https://\udcff.example/hooks", "not a valid URL"),
        # judged by the lookup alone, which test mode (private URLs allowed) skips: taken, then
        # every webhook failed
        ("https://" + "a" * 64 + ".example/hook", "is not a valid host name"),
        ("https://a..example/hook", "is not a valid host name"),
        ("https://xn--/hook", "is not a valid host name"),
        ("https://" + "abcdefghi." * 26 + "example/hook", "is not a valid host name"),
    ],
)
def test_unacceptable_urls(url: str, problem: str) -> None:
    found = endpoint_url_problem(url)

    assert found is not None and problem in found


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),  # loopback
        ("::1", False),
        ("10.1.2.3", False),  # private
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("fd00::1", False),
        ("169.254.169.254", False),  # link-local: cloud metadata
        ("fe80::1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),  # multicast
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:93.184.215.14", True),
        # IPv6 forms that carry an IPv4 address, which a host with NAT64 or a tunnel routes to
        # it (Python's is_global calls several of them public):
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
        ("::a9fe:a9fe", False),  # IPv4-compatible 169.254.169.254
        ("::ffff:0:a00:1", False),  # IPv4-translated 10.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 10.0.0.1
        ("64:ff9b:1::a00:1", False),  # local-use NAT64
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        # Global in Python 3.11.7's tables, not in those fixed for CVE-2024-4032:
        ("fec0::1", False),  # IPv6 site-local
        ("::ffff:192.0.0.8", False),  # IETF protocol assignments
        ("192.0.0.8", False),
        # Reserved since (RFC 9637 documentation, RFC 9602 SRv6 SIDs, the deprecated 6to4 relay
        # anycast of RFC 7526): Python 3.11.7 calls them global.
        ("3fff::1", False),
        ("5f00::1", False),
        ("192.88.99.1", False),
    ],
)
def test_only_public_addresses_receive_webhooks(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public
