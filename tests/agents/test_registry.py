"""agents.registry: the label parsers, and the client against real local registries.

The integration tests run Debian's ``docker-registry`` (the Distribution
registry v2.8) on 127.0.0.1 three times: open, with htpasswd Basic auth, and with
Bearer token auth backed by a small token service written here (RS256 JWTs with
an x5c certificate the registry trusts).  The bai-test images are pushed with
the Docker engine; multi-platform OCI indexes / Docker manifest lists are
uploaded through the registry API itself.
"""
from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agents.registry import (
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V2,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageInfo,
    ImageLabelError,
    RegistryClient,
    RegistryError,
    normalize_architecture,
    parse_resource_limits,
    parse_service_ports,
)
from helpers import require

ROOT = Path(__file__).resolve().parents[2]
DOCKER_SH = ROOT / "scripts" / "lib" / "docker.sh"
USER, PASSWORD = "alice", "s3cret-pass"
HOST_ARCH = normalize_architecture(os.uname().machine)


# ============================================================================================
# parse_service_ports
# ============================================================================================

def test_service_ports_single_and_lists():
    assert parse_service_ports("web:http:8080,echo:tcp:9000") == [
        {"name": "web", "protocol": "http", "container_ports": [8080]},
        {"name": "echo", "protocol": "tcp", "container_ports": [9000]},
    ]
    assert parse_service_ports(" jupyter:http:8081 , vscode:http:[8180,8181],ttyd:pty:8090,") == [
        {"name": "jupyter", "protocol": "http", "container_ports": [8081]},
        {"name": "vscode", "protocol": "http", "container_ports": [8180, 8181]},
        {"name": "ttyd", "protocol": "pty", "container_ports": [8090]},
    ]
    assert parse_service_ports("desk:vnc:5900,win:rdp:3389,x:preopen:1,y:internal:65535,z:TCP:22") == [
        {"name": "desk", "protocol": "vnc", "container_ports": [5900]},
        {"name": "win", "protocol": "rdp", "container_ports": [3389]},
        {"name": "x", "protocol": "preopen", "container_ports": [1]},
        {"name": "y", "protocol": "internal", "container_ports": [65535]},
        {"name": "z", "protocol": "tcp", "container_ports": [22]},
    ]


@pytest.mark.parametrize("value", [None, "", "  ", ","])
def test_service_ports_empty(value):
    assert parse_service_ports(value) == []


@pytest.mark.parametrize("value, message", [
    ("web:http", "expected name:protocol:port"),
    ("web:http:8080:1", "expected name:protocol:port"),
    ("web", "expected name:protocol:port"),
    ("web:ftp:21", "unknown protocol 'ftp'"),
    ("web:http:0", "out of range"),
    ("web:http:65536", "out of range"),
    ("web:http:abc", "not a port number"),
    ("web:http:-1", "not a port number"),
    ("web:http:[]", "empty port list"),
    ("web:http:[8080,x]", "not a port number"),
    ("web:http:[8080,8081", "expected name:protocol:port"),
    ("web:http:2000", "reserved"),
    ("web:http:2001", "reserved"),
    ("web:http:2002", "reserved"),
    ("web:http:2003", "reserved"),
    ("ssh:tcp:2200", "reserved"),
    ("ttyd:pty:7681", "reserved"),
    ("web:http:[8080,2200]", "reserved"),
    ("web:http:8080,web:tcp:9000", "used twice"),
    ("web:http:8080,api:http:8080", "already used"),
    ("-web:http:8080", "invalid name"),
    ("web:http:8080;echo:tcp:9000", "expected name:protocol:port"),
    ("web:http:80;81", "not a port number"),
])
def test_service_ports_malformed(value, message):
    with pytest.raises(ImageLabelError, match=message):
        parse_service_ports(value)
    assert issubclass(ImageLabelError, ValueError)


# ============================================================================================
# parse_resource_limits
# ============================================================================================

def test_resource_limits():
    labels = {
        "ai.backend.kernelspec": "1",
        "ai.backend.resource.min.cpu": "0.1",
        "ai.backend.resource.min.mem": "32m",
        "ai.backend.resource.max.mem": "4g",
        "ai.backend.resource.min.cuda.shares": "0.25",
        "ai.backend.resource.max.cuda.device": "2",
        "ai.backend.resource.min.cuda.mem": "1GiB",
        "ai.backend.resource.max.cpu": "inf",
        "ai.backend.resource.min.shmem": "64m",
    }
    assert parse_resource_limits(labels) == {
        "cpu": {"min": "0.1", "max": None},
        "mem": {"min": str(32 * 2**20), "max": str(4 * 2**30)},
        "cuda.shares": {"min": "0.25", "max": None},
        "cuda.device": {"min": "0", "max": "2"},
        "cuda.mem": {"min": str(2**30), "max": None},
        "shmem": {"min": str(64 * 2**20), "max": None},
    }
    assert parse_resource_limits({}) == {}
    assert parse_resource_limits(None) == {}
    assert parse_resource_limits({"ai.backend.resource.min.mem": "1073741824",
                                  "ai.backend.resource.min.cpu": "2"}) == {
        "mem": {"min": "1073741824", "max": None}, "cpu": {"min": "2", "max": None}}


@pytest.mark.parametrize("labels, message", [
    ({"ai.backend.resource.min.mem": "lots"}, "invalid binary size"),
    ({"ai.backend.resource.min.mem": "1.5"}, "fractional sizes need a unit"),
    ({"ai.backend.resource.min.cpu": "1g"}, "invalid number"),
    ({"ai.backend.resource.min.cpu": "-1"}, "invalid number"),
    ({"ai.backend.resource.min.cpu": "inf"}, "cannot be infinite"),
    ({"ai.backend.resource.min.cpu": "4", "ai.backend.resource.max.cpu": "2"}, "exceeds maximum"),
    ({"ai.backend.resource.min.mem": "2g", "ai.backend.resource.max.mem": "1g"}, "exceeds maximum"),
    ({"ai.backend.resource.min.c pu": "1"}, "invalid slot name"),
])
def test_resource_limits_malformed(labels, message):
    with pytest.raises(ImageLabelError, match=message):
        parse_resource_limits(labels)


def test_normalize_architecture():
    assert normalize_architecture("amd64") == "x86_64"
    assert normalize_architecture("x86_64") == "x86_64"
    assert normalize_architecture("arm64") == "aarch64"
    assert normalize_architecture("AArch64") == "aarch64"
    assert normalize_architecture("ppc64le") == "ppc64le"
    assert normalize_architecture(None) == ""


def test_client_rejects_bad_input():
    with pytest.raises(RegistryError, match="invalid registry URL"):
        RegistryClient("ftp://example")
    with RegistryClient("http://127.0.0.1:1") as reg:
        with pytest.raises(RegistryError, match="invalid repository name"):
            reg.tags("Bad/Name")
        with pytest.raises(RegistryError, match="invalid tag or digest"):
            reg.image_info("bai-test/http", "bad tag")
    assert RegistryClient("registry.example.com:5000").url == "https://registry.example.com:5000"


# ============================================================================================
# real registries
# ============================================================================================

def _ensure(function: str) -> bool:
    result = subprocess.run(["bash", "-c", f'. "{DOCKER_SH}" && {function}'], capture_output=True, text=True,
                            timeout=600)
    return result.returncode == 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Registry:
    """A ``docker-registry serve`` process on 127.0.0.1 with filesystem storage."""

    def __init__(self, workdir: Path, auth: dict | None = None):
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.workdir = workdir
        (workdir / "storage").mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")}, "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
            "health": {"storagedriver": {"enabled": False}},
        }
        if auth:
            config["auth"] = auth
        self.config_path = workdir / "config.yml"
        self.config_path.write_text(json.dumps(config))  # JSON is YAML
        self.log_path = workdir / "registry.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(["docker-registry", "serve", str(self.config_path)],
                                        stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(self.url + "/v2/", timeout=1).status_code in (200, 401):
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"docker-registry did not start:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def push(docker_client, image: str, registry: Registry, repository: str, tag: str, auth_config=None) -> str:
    """Tag ``image`` as <registry>/<repository>:<tag>, push it, untag it; return the manifest digest."""
    target = f"{registry.host}/{repository}"
    docker_client.images.get(image).tag(target, tag)
    try:
        digest = None
        for line in docker_client.images.push(target, tag=tag, stream=True, decode=True, auth_config=auth_config):
            if "error" in line or "errorDetail" in line:
                raise AssertionError(f"push {target}:{tag} failed: {line}")
            digest = (line.get("aux") or {}).get("Digest", digest)
        assert digest, f"push {target}:{tag} reported no digest"
        return digest
    finally:
        docker_client.images.remove(f"{target}:{tag}", noprune=True)


def upload_blob(registry_url: str, repository: str, data: bytes, auth=None) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = httpx.post(f"{registry_url}/v2/{repository}/blobs/uploads/", auth=auth, timeout=10)
    assert start.status_code == 202, start.text
    location = httpx.URL(registry_url).join(start.headers["Location"])
    done = httpx.put(location.copy_merge_params({"digest": digest}), content=data, auth=auth, timeout=10,
                     headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    return {"digest": digest, "size": len(data)}


def upload_manifest(registry_url: str, repository: str, reference: str, manifest: dict, media_type: str,
                    auth=None) -> dict:
    raw = json.dumps(manifest, indent=2).encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    response = httpx.put(f"{registry_url}/v2/{repository}/manifests/{reference}", content=raw, auth=auth,
                         headers={"Content-Type": media_type}, timeout=10)
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    return {"digest": digest, "size": len(raw), "mediaType": media_type}


def small_layer(text: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def upload_multiarch(registry_url: str, repository: str, tag: str, oci: bool) -> dict:
    """An index/list with amd64, arm64/v8 and an attestation entry; returns what was uploaded."""
    manifest_type = OCI_MANIFEST if oci else DOCKER_MANIFEST_V2
    config_type = "application/vnd.oci.image.config.v1+json" if oci else "application/vnd.docker.container.image.v1+json"
    layer_type = ("application/vnd.oci.image.layer.v1.tar+gzip" if oci
                  else "application/vnd.docker.image.rootfs.diff.tar.gzip")
    children = {}
    entries = []
    for arch, variant in (("amd64", None), ("arm64", "v8"), ("unknown", None)):
        layer = small_layer(f"{repository} {tag} {arch}")
        layer_desc = upload_blob(registry_url, repository, layer)
        config = {"architecture": arch, "os": "linux" if arch != "unknown" else "unknown",
                  "config": {"Labels": {"ai.backend.kernelspec": "1", "ai.backend.test-arch": arch,
                                        "ai.backend.service-ports": "web:http:8080"}},
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()]}}
        if variant:
            config["variant"] = variant
        config_desc = upload_blob(registry_url, repository, json.dumps(config).encode())
        manifest = {"schemaVersion": 2, "mediaType": manifest_type,
                    "config": {"mediaType": config_type, **config_desc},
                    "layers": [{"mediaType": layer_type, **layer_desc}]}
        desc = upload_manifest(registry_url, repository, "sha256:" + hashlib.sha256(
            json.dumps(manifest, indent=2).encode()).hexdigest(), manifest, manifest_type)
        entry = dict(desc)
        if arch == "unknown":
            entry["platform"] = {"architecture": "unknown", "os": "unknown"}
            entry["annotations"] = {"vnd.docker.reference.type": "attestation-manifest"}
        else:
            entry["platform"] = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}
        entries.append(entry)
        children[arch] = {"digest": desc["digest"], "config": config_desc["digest"],
                          "size": config_desc["size"] + layer_desc["size"]}
    index_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
    index = {"schemaVersion": 2, "mediaType": index_type, "manifests": entries}
    index_desc = upload_manifest(registry_url, repository, tag, index, index_type)
    return {"index": index_desc["digest"], "children": children}


@pytest.fixture(scope="module")
def registry_binary():
    available = shutil.which("docker-registry") is not None or (
        _ensure("ensure_registry_binary") and shutil.which("docker-registry") is not None)
    require(available, "Debian's docker-registry (apt-get install docker-registry)")


@pytest.fixture(scope="module")
def open_registry(registry_binary, docker_client, test_images, tmp_path_factory):
    """An anonymous registry holding the three bai-test images, two tags of shell, and multi-arch images."""
    registry = Registry(tmp_path_factory.mktemp("registry-open"))
    try:
        digests = {}
        for kind, image in test_images.items():
            digests[f"bai-test/{kind}:1.0"] = push(docker_client, image, registry, f"bai-test/{kind}", "1.0")
        digests["bai-test/shell:latest"] = push(docker_client, test_images["shell"], registry, "bai-test/shell",
                                                "latest")
        registry.digests = digests
        registry.multiarch = {
            "oci": upload_multiarch(registry.url, "bai-test/multi-oci", "1.0", oci=True),
            "docker": upload_multiarch(registry.url, "bai-test/multi-docker", "1.0", oci=False),
        }
        # an image whose config blob is not JSON: scan must skip it and say why
        bad_config = upload_blob(registry.url, "bai-test/broken", b"this is not json")
        layer = upload_blob(registry.url, "bai-test/broken", small_layer("broken"))
        upload_manifest(registry.url, "bai-test/broken", "1.0", {
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST_V2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **bad_config},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", **layer}]},
            DOCKER_MANIFEST_V2)
        yield registry
    finally:
        registry.stop()


def _htpasswd_line(user: str, password: str) -> str | None:
    if shutil.which("htpasswd") or _ensure("ensure_htpasswd"):
        result = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.strip()
    try:  # libxcrypt's bcrypt through the stdlib (deprecated, gone in 3.13)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
        if hashed and hashed.startswith("$2"):
            return f"{user}:{hashed}"
    except Exception:
        pass
    return None


@pytest.fixture(scope="module")
def basic_registry(registry_binary, docker_client, test_images, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("registry-basic")
    line = _htpasswd_line(USER, PASSWORD)
    require(line is not None, "htpasswd (apt-get install apache2-utils)")
    (workdir / "htpasswd").write_text(line + "\n")
    registry = Registry(workdir, auth={"htpasswd": {"realm": "bai-test", "path": str(workdir / "htpasswd")}})
    try:
        registry.digest = push(docker_client, test_images["http"], registry, "bai-test/http", "1.0",
                               auth_config={"username": USER, "password": PASSWORD})
        yield registry
    finally:
        registry.stop()


class TokenService:
    """A Docker token service: GET (and OAuth2 POST) /token -> an RS256 JWT the registry trusts."""

    service = "bai-test-registry"
    issuer = "bai-test-token-issuer"

    def __init__(self, workdir: Path):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bai-test token signer")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(self.key, hashes.SHA256()))
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.bundle = workdir / "token-root.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, user, password, scopes, oauth):
                service.requests.append({"user": user, "scopes": scopes, "method": self.command})
                if user is not None and (user, password) != (USER, PASSWORD):
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"details": "bad credentials"}')
                    return
                token = service.issue(user, scopes if user is not None else [])
                body = {"access_token": token, "expires_in": 300} if oauth else {"token": token, "expires_in": 300}
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                query = parse_qs(urlsplit(self.path).query)
                user = password = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
                self._answer(user, password, scopes, oauth=False)

            def do_POST(self):
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                scopes = [s for value in form.get("scope", []) for s in value.split(" ") if s]
                self._answer(form.get("username", [None])[0], form.get("password", [None])[0], scopes,
                             oauth=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def issue(self, user: str | None, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(12), "access": access}

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64(signature)}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def token_registry(registry_binary, docker_client, test_images, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("registry-token")
    tokens = TokenService(workdir)
    registry = None
    try:
        registry = Registry(workdir, auth={"token": {
            "realm": tokens.realm, "service": tokens.service, "issuer": tokens.issuer,
            "rootcertbundle": str(tokens.bundle)}})
        registry.tokens = tokens
        registry.digest = push(docker_client, test_images["shell"], registry, "bai-test/shell", "1.0",
                               auth_config={"username": USER, "password": PASSWORD})
        yield registry
    finally:
        if registry is not None:
            registry.stop()
        tokens.stop()


# --- anonymous registry: catalog, tags, schema2 images ---------------------------------------

def test_catalog_and_tags(open_registry, test_images):
    with RegistryClient(open_registry.url) as reg:
        reg.ping()
        expected = sorted([f"bai-test/{kind}" for kind in test_images]
                          + ["bai-test/broken", "bai-test/multi-docker", "bai-test/multi-oci"])
        assert sorted(reg.catalog()) == expected
        assert sorted(reg.catalog(page_size=1)) == expected  # every page, by Link headers
        assert sorted(reg.tags("bai-test/shell")) == ["1.0", "latest"]
        assert sorted(reg.tags("bai-test/shell", page_size=1)) == ["1.0", "latest"]
        assert reg.tags("bai-test/http") == ["1.0"]


def test_image_info_of_a_pushed_image(open_registry, docker_client, test_images):
    local = docker_client.images.get(test_images["http"])
    with RegistryClient(open_registry.url) as reg:
        info = reg.image_info("bai-test/http", "1.0")
    assert isinstance(info, ImageInfo)
    assert info.canonical == f"{open_registry.host}/bai-test/http:1.0"
    assert info.registry == open_registry.host
    assert (info.repository, info.tag) == ("bai-test/http", "1.0")
    assert info.digest == open_registry.digests["bai-test/http:1.0"]
    assert info.config_digest == local.id
    assert info.media_type == DOCKER_MANIFEST_V2
    assert info.index_digest is None
    assert info.architecture == HOST_ARCH
    assert normalize_architecture(info.platform_architecture) == HOST_ARCH
    assert info.os == "linux"
    assert 200_000 < info.size < 10 * 2**20
    assert info.labels == local.labels
    assert info.labels["ai.backend.kernelspec"] == "1"
    assert info.is_kernel
    assert info.service_ports == [
        {"name": "web", "protocol": "http", "container_ports": [8080]},
        {"name": "echo", "protocol": "tcp", "container_ports": [9000]},
    ]
    assert info.resource_limits == {"cpu": {"min": "0.1", "max": None}, "mem": {"min": str(32 * 2**20), "max": None}}
    assert json.loads(json.dumps(info.as_dict()))["canonical"] == info.canonical

    with RegistryClient(open_registry.url) as reg:
        assert reg.image_infos("bai-test/http", "1.0") == [info]
        # a plain manifest is returned whatever architecture was asked for
        assert reg.image_info("bai-test/http", "1.0", architecture="aarch64") == info
        shell = reg.image_info("bai-test/shell", "latest")
        batch = reg.image_info("bai-test/batch", "1.0")
    assert shell.digest == open_registry.digests["bai-test/shell:latest"]
    assert shell.service_ports == [] and batch.service_ports == []
    assert batch.labels["ai.backend.runtime-path"] == "/bin/sh"


@pytest.mark.parametrize("flavour", ["oci", "docker"])
def test_multiarch_index_selection(open_registry, flavour):
    uploaded = open_registry.multiarch[flavour]
    repository = f"bai-test/multi-{flavour}"
    with RegistryClient(open_registry.url) as reg:
        infos = reg.image_infos(repository, "1.0")
        amd = reg.image_info(repository, "1.0", architecture="x86_64")
        amd_alias = reg.image_info(repository, "1.0", architecture="amd64")
        arm = reg.image_info(repository, "1.0", architecture="arm64")
        default = reg.image_info(repository, "1.0")
        with pytest.raises(RegistryError, match=r"no image for architecture 'ppc64le' \(available: aarch64, x86_64\)"):
            reg.image_info(repository, "1.0", architecture="ppc64le")

    # the attestation entry is skipped
    assert [(i.architecture, i.platform_architecture) for i in infos] == [("x86_64", "amd64"), ("aarch64", "arm64")]
    assert amd == amd_alias == infos[0]
    assert arm == infos[1]
    if HOST_ARCH in ("x86_64", "aarch64"):
        assert default.architecture == HOST_ARCH
    for info, arch in ((amd, "amd64"), (arm, "arm64")):
        child = uploaded["children"][arch]
        assert info.digest == child["digest"]
        assert info.config_digest == child["config"]
        assert info.size == child["size"]
        assert info.index_digest == uploaded["index"]
        assert info.labels["ai.backend.test-arch"] == arch
        assert info.canonical == f"{open_registry.host}/{repository}:1.0"
        assert info.media_type == (OCI_MANIFEST if flavour == "oci" else DOCKER_MANIFEST_V2)
        assert info.os == "linux"
    assert arm.variant == "v8" and amd.variant is None


def test_scan_collects_images_and_skips_errors(open_registry, test_images):
    with RegistryClient(open_registry.url) as reg:
        result = reg.scan()
        partial = reg.scan(["bai-test/http", "bai-test/nope"])
        streamed = list(reg.iter_scan(["bai-test/http", "bai-test/broken"]))
    names = sorted((i.canonical.split("/", 1)[1], i.architecture) for i in result.images)
    assert names == sorted([(f"bai-test/{kind}:1.0", HOST_ARCH) for kind in test_images] + [
        ("bai-test/multi-docker:1.0", "aarch64"), ("bai-test/multi-docker:1.0", "x86_64"),
        ("bai-test/multi-oci:1.0", "aarch64"), ("bai-test/multi-oci:1.0", "x86_64"),
        ("bai-test/shell:latest", HOST_ARCH),
    ])
    assert len(result.errors) == 1
    where, message = result.errors[0]
    assert where == "bai-test/broken:1.0" and "malformed JSON" in message

    assert [i.canonical for i in partial.images] == [f"{open_registry.host}/bai-test/http:1.0"]
    assert partial.errors[0][0] == "bai-test/nope" and "not found" in partial.errors[0][1]
    assert isinstance(streamed[0], ImageInfo) and isinstance(streamed[1], RegistryError)


def test_not_found_errors(open_registry):
    with RegistryClient(open_registry.url) as reg:
        with pytest.raises(RegistryError, match="not found") as missing_repo:
            reg.tags("bai-test/nope")
        with pytest.raises(RegistryError, match="not found.*MANIFEST_UNKNOWN") as missing_tag:
            reg.image_info("bai-test/http", "9.9")
    assert missing_repo.value.status == 404
    assert missing_tag.value.status == 404


def test_unreachable_registry():
    with RegistryClient(f"http://127.0.0.1:{_free_port()}", timeout=3) as reg:
        with pytest.raises(RegistryError, match="unreachable") as err:
            reg.catalog()
    assert err.value.status is None


# --- Basic auth ------------------------------------------------------------------------------

def test_basic_auth(basic_registry):
    with RegistryClient(basic_registry.url, username=USER, password=PASSWORD) as reg:
        reg.ping()
        assert reg.catalog() == ["bai-test/http"]
        info = reg.image_info("bai-test/http", "1.0")
    assert info.digest == basic_registry.digest
    assert info.labels["ai.backend.service-ports"] == "web:http:8080,echo:tcp:9000"

    with RegistryClient(basic_registry.url) as anonymous:
        with pytest.raises(RegistryError, match="requires authentication") as err:
            anonymous.catalog()
    assert err.value.status == 401
    with RegistryClient(basic_registry.url, username=USER, password="wrong") as wrong:
        with pytest.raises(RegistryError, match="authentication failed") as err:
            wrong.tags("bai-test/http")
    assert err.value.status == 401


# --- Bearer tokens ---------------------------------------------------------------------------

def test_bearer_token_auth(token_registry):
    tokens = token_registry.tokens
    tokens.requests.clear()
    with RegistryClient(token_registry.url, username=USER, password=PASSWORD) as reg:
        assert reg.catalog() == ["bai-test/shell"]
        assert reg.tags("bai-test/shell") == ["1.0"]
        info = reg.image_info("bai-test/shell", "1.0")
        again = reg.image_info("bai-test/shell", "1.0")  # the cached token is reused
    assert info == again
    assert info.digest == token_registry.digest
    assert info.labels["ai.backend.runtime-path"] == "/bin/sh"
    assert info.canonical == f"{token_registry.host}/bai-test/shell:1.0"
    scopes = [tuple(r["scopes"]) for r in tokens.requests]
    assert scopes == [("registry:catalog:*",), ("repository:bai-test/shell:pull",)]
    assert all(r["user"] == USER for r in tokens.requests)


def test_bearer_token_refusals(token_registry):
    with RegistryClient(token_registry.url, username=USER, password="wrong") as reg:
        with pytest.raises(RegistryError, match="authentication failed at the token service") as err:
            reg.catalog()
    assert err.value.status == 401
    # anonymous: the token service hands out a token without any access
    with RegistryClient(token_registry.url) as reg:
        with pytest.raises(RegistryError, match="requires authentication") as err:
            reg.tags("bai-test/shell")
    assert err.value.status == 401


# --- malformed answers (a registry that is not one) ------------------------------------------

@pytest.fixture
def fake_registry():
    """A stdlib server answering /v2/ paths from a dict {path: (status, headers, body)}."""
    routes: dict[str, tuple[int, dict, bytes]] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            status, headers, body = routes.get(urlsplit(self.path).path, (404, {}, b'{"errors": []}'))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.routes = routes
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def test_malformed_answers(fake_registry):
    routes = fake_registry.routes
    routes["/v2/_catalog"] = (200, {"Content-Type": "application/json"}, b"<html>not json</html>")
    routes["/v2/a/tags/list"] = (200, {"Content-Type": "application/json"}, b'{"tags": [1, 2]}')
    routes["/v2/b/tags/list"] = (200, {"Content-Type": "application/json"}, b'{"name": "b", "tags": null}')
    routes["/v2/a/manifests/old"] = (200, {"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"},
                                     b'{"schemaVersion": 1, "name": "a", "tag": "old"}')
    routes["/v2/a/manifests/weird"] = (200, {"Content-Type": "application/json"},
                                       b'{"schemaVersion": 2, "mediaType": "application/x-weird"}')
    routes["/v2/a/manifests/nolayers"] = (200, {"Content-Type": DOCKER_MANIFEST_V2},
                                          json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_V2}).encode())
    routes["/v2/a/manifests/noentries"] = (200, {"Content-Type": OCI_INDEX},
                                           json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX}).encode())
    routes["/v2/a/manifests/server-error"] = (500, {}, b"boom")
    routes["/v2/odd/tags/list"] = (401, {"WWW-Authenticate": "Negotiate"}, b"")
    with RegistryClient(fake_registry.url) as reg:
        with pytest.raises(RegistryError, match="malformed JSON .* the catalog"):
            reg.catalog()
        with pytest.raises(RegistryError, match="not a list of names"):
            reg.tags("a")
        assert reg.tags("b") == []
        with pytest.raises(RegistryError, match="schema 1"):
            reg.image_info("a", "old")
        with pytest.raises(RegistryError, match="unsupported media type"):
            reg.image_info("a", "weird")
        with pytest.raises(RegistryError, match="missing config or layers"):
            reg.image_info("a", "nolayers")
        with pytest.raises(RegistryError, match="no manifests list"):
            reg.image_infos("a", "noentries")
        with pytest.raises(RegistryError, match="HTTP 500") as err:
            reg.image_info("a", "server-error")
        assert err.value.status == 500
        with pytest.raises(RegistryError, match="requires authentication"):
            reg.tags("odd")


# --- the manager's rescan over this client ---------------------------------------------------------

@pytest.mark.django_db
def test_a_superadmin_rescans_an_authenticated_registry_into_images(basic_registry, client, superadmin):
    from agents.models import ContainerRegistry, Image
    from backendai import bgtasks
    from backendai.models import BackgroundTask

    registry = ContainerRegistry.objects.create(registry_name=basic_registry.host, url=basic_registry.url,
                                                username=USER, password=PASSWORD)
    client.force_login(superadmin)
    response = client.post("/admin/agents/containerregistry/", {"action": "rescan", "_selected_action": [registry.pk]},
                           follow=True)
    task = BackgroundTask.objects.get(name="rescan_images")
    assert f'href="/ui/tasks/{task.pk}/"' in response.content.decode()  # the message links to its progress
    assert bgtasks.run(str(task.pk)) == "done"  # as the worker would
    task.refresh_from_db()
    assert task.message.startswith("1 image(s)")
    image = Image.objects.get(name=f"{basic_registry.host}/bai-test/http:1.0")
    assert not image.is_local and image.registry == registry and image.tag == "1.0"
    assert image.config_digest == basic_registry.digest
    assert [p["name"] for p in image.service_ports] == ["web", "echo"]
    registry.refresh_from_db()
    assert registry.last_scan_result.startswith("1 image(s)")


@pytest.mark.django_db
def test_the_rescan_command_reports_a_wrong_password(basic_registry):
    from django.core.management import CommandError, call_command

    from agents.models import ContainerRegistry, Image

    ContainerRegistry.objects.create(registry_name=basic_registry.host, url=basic_registry.url, username=USER,
                                     password="wrong")
    with pytest.raises(CommandError):
        call_command("rescan_images", basic_registry.host)
    assert not Image.objects.exists()
    assert ContainerRegistry.objects.get().last_scan_result.startswith("error:")
