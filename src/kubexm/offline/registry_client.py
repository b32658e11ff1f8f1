"""A push client of the registry HTTP API v2 (the OCI distribution spec), on the standard library.

Blocking calls on one keep-alive connection per worker thread; ``kubexm.offline.sync`` runs them from asyncio
through a bounded thread pool. Authentication follows the registry's challenge: Basic (htpasswd registries)
or the Bearer token flow (Harbor, token servers), tokens cached per scope. Every failure a user can cause or
fix ends as a ``RegistryError``: one line naming the registry and what to do.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from kubexm.errors import KubexmError

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
Body = bytes | Callable[[], BinaryIO] | None
_BLOCK = 1 << 20  # bytes per read of a streamed blob (http.client reads 8 KiB at a time by default)


class RegistryError(KubexmError):
    """The registry refused or failed a request; the message names the registry and the fix."""


class RegistryAuthError(RegistryError):
    exit_code = 3


class TransientError(RegistryError):
    """Worth another attempt: the connection dropped, or the registry answered 5xx/429."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def error_text(self) -> str:
        """The registry's own explanation: the errors[].message/detail of its JSON body, else the body."""
        try:
            errors = json.loads(self.body).get("errors") or []
            parts = []
            for e in errors:
                detail = e.get("detail")
                text = str(e.get("message") or e.get("code") or "")
                if detail and not isinstance(detail, dict | list):
                    text += f": {detail}"
                elif isinstance(detail, dict | list):
                    text += f": {json.dumps(detail)[:200]}"
                parts.append(text)
            if parts:
                return "; ".join(parts)
        except (ValueError, AttributeError):
            pass
        return self.body.decode(errors="replace").strip()[:300] or http.client.responses.get(self.status, "")


@dataclass
class Stats:
    """Requests sent by method, and blob bytes sent: what a no-op re-run must keep at HEADs only."""

    requests: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, method: str, sent: int = 0) -> None:
        with self.lock:
            self.requests[method] += 1
            self.bytes_sent += sent


class RegistryClient:
    """One registry, ``host[:port]``; ``insecure``: TLS without verification (or plain HTTP when the registry
    does not speak TLS)."""

    def __init__(self, registry: str, *, username: str | None = None, password: str | None = None,
                 ca_file: str | None = None, insecure: bool = False, timeout: float = 120.0, retries: int = 3,
                 backoff: float = 0.5) -> None:
        from kubexm.spec.fields import split_host_port

        host, port = split_host_port(registry)
        self.registry = registry
        self.host = host
        self.port = int(port) if port else 443
        self.username = username
        self._password = password
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.insecure = insecure
        self.plain_http = False
        self.stats = Stats()
        self._ssl = self._context(ca_file, insecure)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._scheme: str | None = None  # "basic" or "bearer" once the registry asked
        self._bearer: dict[str, str] = {}  # realm, service
        self._tokens: dict[frozenset[str], str] = {}

    @staticmethod
    def _context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
        if insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise RegistryError(f"cannot read the CA file {ca_file}: {exc}",
                                hint="pass the registry's CA certificate (PEM) with --ca-file") from None

    # -- connections ----------------------------------------------------------------------------------------
    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self.plain_http:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout, blocksize=_BLOCK)
            else:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self._ssl,
                                                   blocksize=_BLOCK)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        self._drop()

    def _send(self, method: str, path: str, headers: dict[str, str], body: Body, size: int | None) -> Response:
        conn = self._conn()
        data: bytes | BinaryIO | None = body() if callable(body) else body
        try:
            hdrs = dict(headers)
            if data is not None:
                hdrs["Content-Length"] = str(len(data) if isinstance(data, bytes) else (size or 0))
            elif method in ("PUT", "POST", "PATCH"):
                hdrs["Content-Length"] = "0"
            conn.request(method, path, body=data, headers=hdrs, encode_chunked=False)
            resp = conn.getresponse()
            payload = resp.read()
            self.stats.count(method, int(hdrs.get("Content-Length", "0")))
            if resp.getheader("Connection", "").lower() == "close":
                self._drop()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
        except ssl.SSLCertVerificationError as exc:
            self._drop()
            raise RegistryError(f"registry {self.registry}: its TLS certificate is not trusted ({exc.verify_message})",
                                hint="pass the registry's CA with --ca-file (kubexm's registry CA: "
                                     "$KUBEXM_HOME/clusters/NAME/pki/registry/ca.crt), or --insecure") from None
        except ssl.SSLError as exc:
            self._drop()
            if self.insecure and not self.plain_http and "WRONG_VERSION_NUMBER" in str(exc):
                self.plain_http = True  # an insecure registry that speaks plain HTTP
                return self._send(method, path, headers, body, size)
            raise TransientError(f"registry {self.registry}: TLS failed: {exc}") from None
        except ConnectionRefusedError:
            self._drop()
            raise TransientError(f"registry {self.registry} refused the connection: it is not running there",
                                 hint="start it (kubexm registry up -f cluster.yaml) or check --registry") from None
        except socket.gaierror as exc:
            self._drop()
            raise RegistryError(f"registry {self.registry}: cannot resolve {self.host}: {exc.strerror}",
                                hint="check --registry") from None
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise TransientError(f"registry {self.registry}: connection failed: {exc or type(exc).__name__}",
                                 hint="check that the registry runs and is reachable; a re-run resumes") from None
        finally:
            if data is not None and not isinstance(data, bytes):
                data.close()

    # -- authentication -------------------------------------------------------------------------------------
    def _basic(self) -> str:
        if self.username is None or self._password is None:
            raise RegistryAuthError(f"registry {self.registry} requires a user name and password",
                                    hint="pass --username USER --password-stdin (the password on stdin)")
        raw = f"{self.username}:{self._password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _auth_header(self, scopes: frozenset[str]) -> dict[str, str]:
        with self._lock:
            scheme = self._scheme
            token = self._tokens.get(scopes)
        if scheme == "basic":
            return {"Authorization": self._basic()}
        if scheme == "bearer":
            if token is None:
                token = self._fetch_token(scopes)
            return {"Authorization": f"Bearer {token}"}
        return {}

    def _challenge(self, resp: Response, scopes: frozenset[str]) -> None:
        """Learn how to authenticate from a 401's WWW-Authenticate."""
        value = resp.header("www-authenticate")
        kind, _, params = value.partition(" ")
        if kind.lower() == "basic":
            with self._lock:
                self._scheme = "basic"
            return
        if kind.lower() == "bearer":
            found = dict(_CHALLENGE_PARAM.findall(params))
            if "realm" not in found:
                raise RegistryError(f"registry {self.registry} asked for a token without saying where to get one")
            with self._lock:
                self._scheme = "bearer"
                self._bearer = {"realm": found["realm"], "service": found.get("service", "")}
                self._tokens.pop(scopes, None)
            return
        raise RegistryError(f"registry {self.registry} asks for an unsupported authentication: {value or 'none'}")

    def _fetch_token(self, scopes: frozenset[str]) -> str:
        realm, service = self._bearer["realm"], self._bearer.get("service", "")
        query = [("service", service)] if service else []
        query += [("scope", s) for s in sorted(scopes)]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {"Authorization": self._basic()} if self.username is not None else {}
        parsed = urllib.parse.urlsplit(url)
        conn: http.client.HTTPConnection
        if parsed.scheme == "https":
            conn = http.client.HTTPSConnection(parsed.hostname or "", parsed.port or 443, timeout=self.timeout,
                                               context=self._ssl)
        else:
            conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port or 80, timeout=self.timeout)
        try:
            conn.request("GET", parsed.path + ("?" + parsed.query if parsed.query else ""), headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            self.stats.count("GET")
        except ssl.SSLCertVerificationError as exc:
            raise RegistryError(f"token server {parsed.hostname}: TLS certificate not trusted ({exc.verify_message})",
                                hint="pass the CA with --ca-file, or --insecure") from None
        except OSError as exc:
            raise TransientError(f"token server {parsed.hostname} of registry {self.registry}: {exc}") from None
        finally:
            conn.close()
        if resp.status in (401, 403):
            raise self._rejected()
        if resp.status != 200:
            raise RegistryError(f"token server of registry {self.registry} answered {resp.status}")
        try:
            data = json.loads(body)
            token = str(data.get("token") or data.get("access_token"))
        except (ValueError, AttributeError):
            raise RegistryError(f"token server of registry {self.registry} sent no token") from None
        with self._lock:
            self._tokens[scopes] = token
        return token

    def _rejected(self) -> RegistryAuthError:
        who = f"user {self.username!r}" if self.username else "anonymous access"
        return RegistryAuthError(f"registry {self.registry} rejected {who} (401 Unauthorized)",
                                 hint="check --username and the password given on stdin (--password-stdin)")

    # -- requests -------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, scopes: Iterable[str] = (), headers: dict[str, str] | None = None,
                body: Body = None, size: int | None = None, retry: bool = True) -> Response:
        """One request with authentication; 401 is answered once by authenticating, transient failures are
        retried with backoff when ``retry`` (a request whose body is a stream is not: its caller starts over)."""
        wanted = frozenset(scopes)
        attempts = self.retries + 1 if retry else 1
        delay = self.backoff
        authenticated_once = False
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self._send(method, path, {**(headers or {}), **self._auth_header(wanted)}, body, size)
            except TransientError:
                if attempt >= attempts:
                    raise
                time.sleep(delay)
                delay *= 2
                continue
            if resp.status == 401:
                if authenticated_once:
                    raise self._rejected()
                self._challenge(resp, wanted)
                authenticated_once = True
                attempt -= 1  # authenticating is not a failed attempt
                continue
            if resp.status == 429 or resp.status >= 500:
                if attempt < attempts:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise RegistryError(f"registry {self.registry} failed {method} {path.split('?')[0]}: "
                                    f"{resp.status} {resp.error_text()}",
                                    hint="see the registry's log; when its disk is full, free space and re-run")
            return resp

    def expect(self, resp: Response, what: str, *codes: int) -> Response:
        if resp.status in codes:
            return resp
        if resp.status == 403:
            raise RegistryAuthError(f"registry {self.registry} denied {what} to {self.username or 'anonymous'} "
                                    f"(403): {resp.error_text()}", hint="give the user push rights on the project")
        raise RegistryError(f"registry {self.registry}: {what} answered {resp.status}: {resp.error_text()}")

    def ping(self) -> None:
        """GET /v2/: reachable, speaks the v2 API, and these credentials are accepted."""
        resp = self.request("GET", "/v2/")
        if resp.status == 404:
            raise RegistryError(f"{self.registry} does not serve the registry v2 API (GET /v2/ answered 404)",
                                hint="check --registry")
        self.expect(resp, "GET /v2/", 200)

    # -- blobs and manifests --------------------------------------------------------------------------------
    @staticmethod
    def _scope(repo: str, actions: str = "pull,push") -> str:
        return f"repository:{repo}:{actions}"

    def blob_exists(self, repo: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=[self._scope(repo)])
        if resp.status == 404:
            return False
        self.expect(resp, f"HEAD blob {digest} in {repo}", 200)
        return True

    def start_upload(self, repo: str, digest: str, mount_from: str | None = None) -> str | None:
        """None when the blob was mounted from ``mount_from`` (no upload needed), else the upload location."""
        scopes = [self._scope(repo)]
        query = ""
        if mount_from:
            scopes.append(self._scope(mount_from, "pull"))
            query = "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from})
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/{query}", scopes=scopes)
        if resp.status == 201 and mount_from:
            return None
        self.expect(resp, f"start upload to {repo}", 202)
        location = resp.header("location")
        if not location:
            raise RegistryError(f"registry {self.registry} started an upload without a Location")
        return location

    @staticmethod
    def _with_query(location: str, **params: str) -> str:
        parts = urllib.parse.urlsplit(location)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
        return parts.path + ("?" + urllib.parse.urlencode(query) if query else "")

    def upload_blob(self, repo: str, digest: str, opener: Callable[[int, int], BinaryIO], size: int,
                    location: str, chunk_size: int) -> None:
        """Send the blob to an upload session: one PUT when it fits ``chunk_size``, else PATCHes of that size
        and a closing PUT. The registry checks the digest; a mismatch is the bundle's fault."""
        scopes = [self._scope(repo)]
        octet = {"Content-Type": "application/octet-stream"}
        if size <= chunk_size:
            resp = self.request("PUT", self._with_query(location, digest=digest), scopes=scopes, headers=octet,
                                body=lambda: opener(0, size), size=size, retry=False)
        else:
            offset = 0
            while offset < size:
                n = min(chunk_size, size - offset)
                start = offset
                resp = self.request("PATCH", self._with_query(location), scopes=scopes,
                                    headers={**octet, "Content-Range": f"{start}-{start + n - 1}"},
                                    body=lambda s=start, k=n: opener(s, k), size=n, retry=False)  # type: ignore[misc]
                self.expect(resp, f"upload a chunk of {digest} to {repo}", 202)
                location = resp.header("location") or location
                offset += n
            resp = self.request("PUT", self._with_query(location, digest=digest), scopes=scopes, retry=False)
        if resp.status == 400 and "DIGEST_INVALID" in resp.body.decode(errors="replace"):
            raise BlobCorrupt(digest)
        self.expect(resp, f"upload blob {digest} to {repo}", 201)

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", scopes=[self._scope(repo)],
                            headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if resp.status == 404:
            return None
        self.expect(resp, f"HEAD manifest {repo}:{reference}", 200)
        return resp.header("docker-content-digest") or None

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest; returns the digest the registry stored, which must be the content's own."""
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}", scopes=[self._scope(repo)],
                            headers={"Content-Type": media_type}, body=data)
        self.expect(resp, f"PUT manifest {repo}:{reference}", 201)
        want = "sha256:" + hashlib.sha256(data).hexdigest()
        got = resp.header("docker-content-digest")
        if got and got != want:
            raise RegistryError(f"registry {self.registry} stored {repo}:{reference} as {got}, not {want}",
                                hint="the registry rewrote the manifest; use a registry that keeps manifests as sent")
        return want


class BlobCorrupt(RegistryError):
    """The registry computed another digest than the blob's name: the bundle's copy is damaged."""

    def __init__(self, digest: str) -> None:
        super().__init__(f"blob {digest} in the bundle does not match its digest (the registry refused it)",
                         hint="the bundle is damaged: run `kubexm offline verify` and rebuild or copy it again")
        self.digest = digest
