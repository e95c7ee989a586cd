"""Store URLs are shown with their secrets masked, and failures get a reason people can act on."""

from __future__ import annotations

import socket

import pytest

from adapters.probes import failure_reason, mask_url, unreachable


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mysql+asyncmy://opsicle:s3cret@db:3306/opsicle", "mysql+asyncmy://opsicle:***@db:3306/opsicle"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("mongodb://audit:s3cret@m1:27017,m2:27017/?authSource=admin",
         "mongodb://audit:***@m1:27017,m2:27017/?authSource=admin"),
        ("nats://s3cret@queue:4222", "nats://***@queue:4222"),
        ("rediss://cache:6379/0?password=s3cret&ssl_cert_reqs=none",
         "rediss://cache:6379/0?password=***&ssl_cert_reqs=none"),
        ("sqlite+aiosqlite:////var/lib/opsicle/opsicle.db",
         "sqlite+aiosqlite:////var/lib/opsicle/opsicle.db"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_mask_url_hides_passwords_tokens_and_secret_parameters(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert "s3cret" not in mask_url(url)


def _raised(exc: BaseException, wrapper: type[Exception] = RuntimeError) -> BaseException:
    """``exc`` as the cause of a driver-style wrapper, the way adapters see it."""
    try:
        try:
            raise exc
        except BaseException as inner:
            raise wrapper("the driver gave up") from inner
    except Exception as outer:
        return outer


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (_raised(ConnectionRefusedError(111, "Connect call failed")), "connection refused"),
        (_raised(socket.gaierror(-2, "Name or service not known")), "DNS"),
        (_raised(TimeoutError()), "no answer (timeout)"),
        (RuntimeError("(1045, \"Access denied for user 'x'@'localhost'\")"),
         "authentication failed"),
        (RuntimeError("WRONGPASS invalid username-password pair"), "authentication failed"),
        (RuntimeError("nats: 'Authorization Violation'"), "authentication failed"),
        (RuntimeError("(2003, \"Can't connect to MySQL server ([Errno 111] Connect call "
                      "failed)\")"), "connection refused"),
        (RuntimeError("(2003, \"Can't connect to MySQL server on '10.0.0.5' ([SSL: "
                      "CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
                      "issuer certificate (_ssl.c:1006)\")"),
         "TLS: the server's certificate did not verify (unable to get local issuer "
         "certificate); check the CA"),
        (ValueError("something else entirely"), "ValueError: something else entirely"),
    ],
)
def test_failure_reason_says_refused_dns_auth_or_timeout(exc: BaseException, reason: str) -> None:
    assert failure_reason(exc).startswith(reason)


def test_unreachable_names_the_store_and_the_masked_url() -> None:
    error = unreachable("cache", "redis://:s3cret@127.0.0.1:1/0", ConnectionRefusedError())
    assert error.message == (
        "cache at redis://:***@127.0.0.1:1/0: connection refused (nothing listens there)"
    )
