"""The Bearer token flow (Harbor, Docker Hub-style registries) against a real distribution registry configured
for token auth, with a small token server on loopback that signs JWTs with a certificate from kubexm's PKI."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kubexm.lab.registry import RegistryUnavailable
from kubexm.offline.registry_client import RegistryAuthError
from kubexm.offline.sync import sync_bundle
from kubexm.pki.certs import CertSpec, load_cert, load_key
from kubexm.pki.store import PKI
from kubexm.steps.registry import REGISTRY_CA

from .conftest import PASSWORD, USER, stop
from .conftest import RunningRegistry as Running
from .oci import LayoutWriter, multiarch

SERVICE = "kubexm-test-registry"
ISSUER = "kubexm-test-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Grants what a request's scopes ask for, to one user with one password (Basic auth on the token GET)."""

    def __init__(self, pki: PKI, user: str, password: str) -> None:
        spec = CertSpec("registry/token-signer", "token-signer", REGISTRY_CA.path, usages=("client",))
        pki.issue(spec)
        self.cert = load_cert(pki.crt(spec.path).read_bytes(), "signer")
        self.key = load_key(pki.key(spec.path).read_bytes(), "signer")
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.scopes: list[list[str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                if self.headers.get("Authorization") != server.expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                scopes = query.get("scope", [])
                server.scopes.append(scopes)
                body = json.dumps({"token": server.token(scopes)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": ISSUER, "sub": "pusher", "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        assert isinstance(self.key, rsa.RSAPrivateKey)  # the cluster's default key type: RS256
        signature = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64(signature)}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[tuple[Running, TokenServer]]:
    reg = Running(tmp_path / "tokenreg", USER, PASSWORD)
    tokens = TokenServer(reg.pki, "robot", "robot-secret")
    reg.use_auth({"token": {"realm": f"http://127.0.0.1:{tokens.port}/token", "service": SERVICE,
                            "issuer": ISSUER, "rootcertbundle": str(reg.ca_file)}})
    try:
        reg.start()
    except RegistryUnavailable as exc:
        tokens.close()
        pytest.skip(str(exc))
    yield reg, tokens
    stop(reg)
    tokens.close()


def test_bearer_tokens_are_fetched_per_repository_and_the_push_lands(token_registry: tuple[Running, TokenServer],
                                                                     tmp_path: Path) -> None:
    reg, tokens = token_registry
    bundle = tmp_path / "b"
    writer = LayoutWriter(bundle / "app")
    digest = multiarch(writer, "example.com/team/app:v1", b"shared")
    multiarch(writer, "example.com/other/tool:v1", b"shared")
    report = sync_bundle(bundle, reg.address, username="robot", password="robot-secret", ca_file=str(reg.ca_file))
    assert [i.status for i in report.images] == ["pushed", "pushed"], [i.error for i in report.images]
    assert report.images[0].digest == digest
    asked = {s for scopes in tokens.scopes for s in scopes}
    assert {"repository:team/app:pull,push", "repository:other/tool:pull,push"} <= asked
    assert report.blobs_mounted >= 1  # the shared layer crossed repositories with a token for both

    again = sync_bundle(bundle, reg.address, username="robot", password="robot-secret", ca_file=str(reg.ca_file))
    assert [i.status for i in again.images] == ["present", "present"]

    with pytest.raises(RegistryAuthError, match="rejected user 'robot'"):
        sync_bundle(bundle, reg.address, username="robot", password="wrong", ca_file=str(reg.ca_file))
