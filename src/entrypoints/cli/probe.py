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
    """Exit 0 when the role serving on listen (OPSICLE_LISTEN) answers 200 on /healthz with
    {"status": "ok"}.

    Made for container health checks: it needs nothing but this executable. A role's answer
    (its own, or the coordinators') must be 200 with {"status": "ok"}, a --url's 200;
    redirects are not followed. Exit codes: 0 every probed URL answered so, 5 one did not
    (the message names it and why).
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
    # A role (ours or a coordinator) must give its documented answer, not just any 200.
    results = [{"url": u, "status": probe(u, timeout, verify=verify, role=not url)}
               for u in urls]
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


def probe(url: str, timeout: float, *, verify: bool = True, role: bool = False) -> int:
    """The status of GET ``url`` when it is 200 (redirects are not followed) and, for a
    ``role``'s /healthz or /readyz, its body is ``{"status": "ok", …}``; ``Unavailable``
    naming the URL otherwise."""
    import http.client
    import json
    import ssl
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None  # a 3xx is an answer of its own (HTTPError), not a hop to elsewhere

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
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                         NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as answer:
            status, body = int(answer.status), answer.read(4096)
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
    if status != 200:
        raise Unavailable(f"{url} answered {status}, not 200")
    if role:
        try:
            said = json.loads(body)
        except ValueError:
            said = None
        if not isinstance(said, dict) or said.get("status") != "ok":
            shown = body[:200].decode(errors="replace").strip()
            raise Unavailable(f'{url} answered 200 without "status": "ok": {shown}')
    return status
