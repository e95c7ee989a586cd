"""``opsicle healthcheck``: probe a role's /healthz or /readyz, for container health checks."""

from __future__ import annotations

from typing import Annotated

from cyclopts import Parameter

from domain.errors import FieldError, Invalid, Unavailable
from entrypoints import settings

# A wildcard listen address is reached through loopback from inside the same host.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}  # noqa: S104


def healthcheck(
    *,
    url: Annotated[
        list[str] | None,
        Parameter(
            help="Probe this URL instead; repeat for several (all must answer 200).", negative=""
        ),
    ] = None,
    coordinators: Annotated[
        bool,
        Parameter(
            help="Probe the /healthz of every coordinator-url (a worker's health).", negative=""
        ),
    ] = False,
    ready: Annotated[
        bool,
        Parameter(help="Probe /readyz (the role and its stores) instead of /healthz.", negative=""),
    ] = False,
    timeout: Annotated[float, Parameter(help="Seconds to wait for each answer.")] = 5.0,
) -> int:
    """Exit 0 when the role serving on listen (OPSICLE_LISTEN) answers 200 on /healthz.

    Made for container health checks: it needs nothing but this executable. Exit codes: 0
    every probed URL answered 200, 5 one did not (the message names it and why).
    """
    resolved = settings.current.get(settings.load())
    path = "/readyz" if ready else "/healthz"
    if url:
        urls = list(url)
    elif coordinators:
        from entrypoints.worker import coordinator_urls

        urls = [u.rstrip("/") + path for u in coordinator_urls(resolved["coordinator-url"])]
    else:
        urls = [own_url(resolved) + path]
    # Our own role on loopback: its certificate names the public host, never 127.0.0.1.
    verify = bool(url or coordinators)
    if not urls:
        raise Invalid(
            "no URL to probe",
            errors=(FieldError("coordinator-url", "is empty; set OPSICLE_COORDINATOR_URL (or "
                                                  "coordinator-url in the config file), or "
                                                  "give --url"),),
        )
    results = [{"url": u, "status": probe(u, timeout, verify=verify)} for u in urls]
    fmt = resolved["output"]
    if fmt == "text":
        from entrypoints.output import console

        for row in results:
            console().print(f"{row['url']}: {row['status']}", markup=False)
    else:
        from entrypoints.output import emit

        emit(results, fmt)
    return 0


def own_url(resolved: settings.Settings) -> str:
    """This host's role as a client on the same host reaches it: wildcard hosts → loopback."""
    host, _, port = str(resolved["listen"]).rpartition(":")
    scheme = "https" if resolved["tls-cert"] else "http"
    return f"{scheme}://{LOOPBACK.get(host, host)}:{port}"


def probe(url: str, timeout: float, *, verify: bool = True) -> int:
    """The status of GET ``url`` when it is 200; ``Unavailable`` naming the URL otherwise."""
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise Invalid(
            f"'{url}' is not an http(s) URL",
            errors=(FieldError("url", f"expected http:// or https://, got '{url}'"),),
        )
    context = None
    if url.startswith("https://") and verify:
        import certifi

        # A one-file executable in a minimal image has no system CA store to fall back on.
        context = ssl.create_default_context(cafile=certifi.where())
    elif url.startswith("https://"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        body = exc.read(200).decode(errors="replace").strip()
        raise Unavailable(f"{url} answered {exc.code}: {body}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise Unavailable(f"{url} did not answer: {reason}") from exc
    except http.client.InvalidURL as exc:  # a port that is not a number, a space in the path
        raise Invalid(
            f"'{url}' is not a valid URL",
            errors=(FieldError("url", str(exc)),),
        ) from exc
    except http.client.HTTPException as exc:  # something answered, but not in HTTP
        raise Unavailable(f"{url} did not answer in HTTP ({type(exc).__name__})") from exc
