"""A client for the Docker Registry HTTP API v2, used by the manager to rescan a registry.

Pure Python (httpx and :mod:`backendai.slots`); it imports nothing of Django so it
can run in a worker, a management command or a test on its own.

    with RegistryClient("http://127.0.0.1:5000", username="u", password="p") as reg:
        reg.catalog()                          # ["bai/python", "bai/shell", ...]
        reg.tags("bai/python")                 # ["3.11", "latest"]
        info = reg.image_info("bai/python", "3.11", architecture="x86_64")
        info.canonical, info.digest, info.labels, info.service_ports
        result = reg.scan()                    # every repository, tag and platform
        result.images, result.errors

What it speaks:

* Docker image manifests v2 schema 2 and OCI image manifests;
* Docker manifest lists and OCI image indexes: :meth:`RegistryClient.image_infos`
  returns one :class:`ImageInfo` per platform (attestation and ``unknown``
  entries are skipped), :meth:`RegistryClient.image_info` picks the entry for
  one architecture (default: this machine's);
* anonymous access, HTTP Basic auth, and Bearer tokens obtained from the
  ``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` challenge (with
  the username/password, when given, sent to the token service);
* ``Link: <...>; rel="next"`` pagination of ``/v2/_catalog`` and ``/tags/list``.

Architectures are reported the way Backend.AI does (``x86_64``, ``aarch64``);
:attr:`ImageInfo.platform_architecture` keeps the registry's own spelling
(``amd64``, ``arm64``).  Every failure raises :class:`RegistryError`, whose
``status`` is the HTTP status when there was one.

Also here, pure helpers for Backend.AI's image labels:
:func:`parse_service_ports` (``ai.backend.service-ports``) and
:func:`parse_resource_limits` (``ai.backend.resource.{min,max}.<slot>``).
"""
from __future__ import annotations

import base64
import hashlib
import json
import platform
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from backendai.slots import SlotError, parse_binary_size, parse_count, slot_type_of

__all__ = [
    "ImageInfo", "ImageLabelError", "MANIFEST_LIST_TYPES", "MANIFEST_TYPES", "RegistryClient",
    "RegistryError", "RESERVED_PORTS", "SERVICE_PORT_PROTOCOLS", "ScanResult", "normalize_architecture",
    "parse_resource_limits", "parse_service_ports",
]

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_V1 = ("application/vnd.docker.distribution.manifest.v1+json",
                      "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFEST_TYPES = (DOCKER_MANIFEST_V2, OCI_MANIFEST)
MANIFEST_LIST_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
_ACCEPT = ", ".join((*MANIFEST_LIST_TYPES, *MANIFEST_TYPES))

# Backend.AI's spelling of architectures (ai.backend.common.arch.arch_name_aliases).
_ARCH_ALIASES = {
    "amd64": "x86_64", "x86_64": "x86_64", "x86-64": "x86_64", "x64": "x86_64",
    "arm64": "aarch64", "aarch64": "aarch64", "arm64/v8": "aarch64",
}
_PAGE_SIZE = 100
_MAX_PAGES = 10_000


def normalize_architecture(name: str | None) -> str:
    """``amd64`` -> ``x86_64``, ``arm64`` -> ``aarch64``; anything else lower-cased as is."""
    if not name:
        return ""
    name = name.strip().lower()
    return _ARCH_ALIASES.get(name, name)


def _host_architecture() -> str:
    return normalize_architecture(platform.machine()) or "x86_64"


class RegistryError(Exception):
    """Anything that went wrong talking to a registry: unreachable, refused, missing, malformed."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.url = url


class ImageLabelError(ValueError):
    """A malformed ``ai.backend.*`` image label."""


@dataclass(frozen=True)
class ImageInfo:
    """One image (one platform of one tag) as the registry describes it."""

    canonical: str                  # <registry host[:port]>/<repository>:<tag>
    registry: str                   # host[:port]
    repository: str
    tag: str
    digest: str                     # the image manifest's digest (sha256:...)
    size: int                       # config blob + every layer, compressed bytes
    architecture: str               # Backend.AI's spelling: x86_64, aarch64, ...
    os: str
    labels: dict[str, str] = field(default_factory=dict)
    config_digest: str = ""         # the image id Docker shows once pulled
    media_type: str = ""
    platform_architecture: str = ""  # the registry's spelling: amd64, arm64, ...
    variant: str | None = None
    index_digest: str | None = None  # the manifest list / OCI index it was picked from

    @property
    def service_ports(self) -> list[dict[str, Any]]:
        return parse_service_ports(self.labels.get("ai.backend.service-ports"))

    @property
    def resource_limits(self) -> dict[str, dict[str, str | None]]:
        return parse_resource_limits(self.labels)

    @property
    def is_kernel(self) -> bool:
        """Backend.AI only runs images labelled ``ai.backend.kernelspec``."""
        return bool(self.labels.get("ai.backend.kernelspec"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "canonical": self.canonical, "registry": self.registry, "repository": self.repository,
            "tag": self.tag, "digest": self.digest, "size": self.size, "architecture": self.architecture,
            "os": self.os, "labels": dict(self.labels), "config_digest": self.config_digest,
            "media_type": self.media_type, "platform_architecture": self.platform_architecture,
            "variant": self.variant, "index_digest": self.index_digest,
        }


@dataclass
class ScanResult:
    images: list[ImageInfo] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (repository[:tag], message)


# --- WWW-Authenticate / Link parsing ---------------------------------------------------------

_CHALLENGE_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')
_LINK_RE = re.compile(r'<([^>]*)>\s*((?:;\s*[^;,]+)*)')


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {"realm": ..., "service": ...})."""
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _CHALLENGE_PARAM_RE.match(rest, pos)
        if not match or match.end() == pos:
            break
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value or "")
        pos = match.end()
    return scheme.lower(), params


def _next_link(header: str | None) -> str | None:
    if not header:
        return None
    for match in _LINK_RE.finditer(header):
        if re.search(r'rel\s*=\s*"?next"?', match.group(2) or ""):
            return match.group(1)
    return None


def _scope_for(path: str) -> str | None:
    """The token scope a request path needs (for registries that answer without ``scope``)."""
    if path.startswith("/v2/_catalog"):
        return "registry:catalog:*"
    match = re.match(r"^/v2/(.+?)/(?:manifests|blobs|tags)/", path)
    if match:
        return f"repository:{match.group(1)}:pull"
    return None


_REPO_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


class RegistryClient:
    """A Docker Registry HTTP API v2 client (see the module docstring)."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 verify_tls: bool = True, timeout: float = 10, *, registry_name: str | None = None,
                 transport: httpx.BaseTransport | None = None):
        if not url or not isinstance(url, str):
            raise RegistryError("a registry URL is required")
        if "://" not in url:
            url = "https://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(f"invalid registry URL: {url!r}", url=url)
        self.url = f"{parts.scheme}://{parts.netloc}"
        # what image names are prefixed with: host[:port] as users write it
        self.registry_name = registry_name or parts.netloc.rpartition("@")[2]
        self.username = username
        self.password = password
        self._basic = None
        if username is not None:
            raw = f"{username}:{password or ''}".encode()
            self._basic = "Basic " + base64.b64encode(raw).decode()
        self._bearer_challenge: dict[str, str] | None = None
        self._tokens: dict[str, str] = {}
        self._use_basic = False
        self._http = httpx.Client(verify=verify_tls, timeout=timeout, follow_redirects=True,
                                  transport=transport, headers={"User-Agent": "backendai-django-registry/1"})

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.url!r}, username={self.username!r})"

    # --- HTTP plumbing -----------------------------------------------------------------------

    def _auth_header(self, path: str) -> str | None:
        if self._bearer_challenge is not None:
            scope = _scope_for(path)
            token = self._tokens.get(scope or "")
            if token:
                return f"Bearer {token}"
            return None
        if self._use_basic:
            return self._basic
        return None

    def _send(self, method: str, url: str, headers: dict[str, str]) -> httpx.Response:
        try:
            return self._http.request(method, url, headers=headers)
        except httpx.TimeoutException as exc:
            raise RegistryError(f"registry {self.url} timed out ({type(exc).__name__})", url=url) from exc
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {self.url} is unreachable: {exc}", url=url) from exc

    def _request(self, method: str, path_or_url: str, accept: str | None = None,
                 what: str | None = None) -> httpx.Response:
        url = urljoin(self.url + "/", path_or_url)
        path = urlsplit(url).path
        headers: dict[str, str] = {}
        if accept:
            headers["Accept"] = accept
        auth = self._auth_header(path)
        if auth:
            headers["Authorization"] = auth
        response = self._send(method, url, headers)
        if response.status_code == 401:
            retry_auth = self._answer_challenge(response, path)
            if retry_auth:
                headers["Authorization"] = retry_auth
                response = self._send(method, url, headers)
        if response.status_code >= 400:
            raise self._error(response, what or path)
        return response

    def _answer_challenge(self, response: httpx.Response, path: str) -> str | None:
        """Work out the Authorization header a 401 asks for; None when there is nothing to try."""
        header = response.headers.get("WWW-Authenticate", "")
        scheme, params = _parse_challenge(header)
        if scheme == "basic":
            if self._basic is None or self._use_basic and "Authorization" in response.request.headers:
                return None
            self._use_basic = True
            return self._basic
        if scheme == "bearer":
            realm = params.get("realm")
            if not realm:
                raise RegistryError(f"registry {self.url} sent a Bearer challenge without a realm",
                                    status=401, url=str(response.url))
            self._bearer_challenge = params
            scope = params.get("scope") or _scope_for(path)
            token = self._fetch_token(realm, params.get("service"), scope)
            self._tokens[_scope_for(path) or ""] = token
            return f"Bearer {token}"
        return None

    def _fetch_token(self, realm: str, service: str | None, scope: str | None) -> str:
        query: dict[str, str] = {}
        if service:
            query["service"] = service
        if scope:
            query["scope"] = scope
        if self.username:
            query["account"] = self.username
        headers = {"Authorization": self._basic} if self._basic else {}
        try:
            response = self._http.get(realm, params=query, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryError(f"token service {realm} is unreachable: {exc}", url=realm) from exc
        if response.status_code in (401, 403):
            raise RegistryError(f"authentication failed at the token service {realm} "
                                f"(HTTP {response.status_code})", status=401, url=realm)
        if response.status_code >= 400:
            raise RegistryError(f"token service {realm} answered HTTP {response.status_code}",
                                status=response.status_code, url=realm)
        try:
            body = response.json()
        except ValueError as exc:
            raise RegistryError(f"token service {realm} sent malformed JSON", url=realm) from exc
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not token or not isinstance(token, str):
            raise RegistryError(f"token service {realm} sent no token", url=realm)
        return token

    def _error(self, response: httpx.Response, what: str) -> RegistryError:
        status = response.status_code
        detail = ""
        try:
            body = response.json()
            errors = body.get("errors") if isinstance(body, dict) else None
            if errors:
                detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                                   for e in errors if isinstance(e, dict))
        except ValueError:
            pass
        suffix = f" ({detail})" if detail else ""
        if status == 401:
            message = (f"authentication failed for {what} at {self.url}" if self.username
                       else f"{what} at {self.url} requires authentication") + suffix
        elif status == 403:
            message = f"access to {what} at {self.url} is forbidden{suffix}"
        elif status == 404:
            message = f"{what} not found at {self.url}{suffix}"
        else:
            message = f"registry {self.url} answered HTTP {status} for {what}{suffix}"
        return RegistryError(message, status=status, url=str(response.url))

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise RegistryError(f"malformed JSON from {self.url} for {what}", status=response.status_code,
                                url=str(response.url)) from exc

    def _paginate(self, path: str, key: str, what: str) -> list[str]:
        items: list[str] = []
        seen: set[str] = set()
        url: str | None = path
        pages = 0
        while url and url not in seen and pages < _MAX_PAGES:
            seen.add(url)
            pages += 1
            response = self._request("GET", url, what=what)
            body = self._json(response, what)
            if not isinstance(body, dict):
                raise RegistryError(f"malformed answer from {self.url} for {what}: not an object")
            values = body.get(key) or []  # a repository without tags answers {"tags": null}
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise RegistryError(f"malformed answer from {self.url} for {what}: {key!r} is not a list of names")
            items.extend(values)
            link = _next_link(response.headers.get("Link"))
            url = urljoin(str(response.url), link) if link else None
        return items

    # --- the API -----------------------------------------------------------------------------

    def ping(self) -> None:
        """Check the registry speaks API v2 and our credentials are accepted."""
        response = self._request("GET", "/v2/", what="the API root")
        version = response.headers.get("Docker-Distribution-API-Version")
        if version and not version.startswith("registry/2"):
            raise RegistryError(f"{self.url} does not speak the registry API v2 ({version})")

    def catalog(self, page_size: int = _PAGE_SIZE) -> list[str]:
        """Every repository name in the registry (``/v2/_catalog``, all pages)."""
        return self._paginate(f"/v2/_catalog?n={int(page_size)}", "repositories", "the catalog")

    def tags(self, repository: str, page_size: int = _PAGE_SIZE) -> list[str]:
        """Every tag of one repository (``/v2/<name>/tags/list``, all pages)."""
        repository = self._check_repository(repository)
        return self._paginate(f"/v2/{repository}/tags/list?n={int(page_size)}", "tags",
                              f"repository {repository!r}")

    def manifest(self, repository: str, reference: str) -> tuple[dict[str, Any], str, str]:
        """Fetch a manifest by tag or digest: (parsed body, media type, digest)."""
        repository = self._check_repository(repository)
        is_digest = bool(_DIGEST_RE.fullmatch(reference))
        if not is_digest and not _TAG_RE.fullmatch(reference or ""):
            raise RegistryError(f"invalid tag or digest: {reference!r}")
        what = f"manifest {repository}{'@' if is_digest else ':'}{reference}"
        response = self._request("GET", f"/v2/{repository}/manifests/{reference}", accept=_ACCEPT, what=what)
        raw = response.content
        body = self._json(response, what)
        if not isinstance(body, dict):
            raise RegistryError(f"malformed manifest for {what}: not an object")
        computed = "sha256:" + hashlib.sha256(raw).hexdigest()
        digest = response.headers.get("Docker-Content-Digest") or computed
        if is_digest and reference.startswith("sha256:") and computed != reference:
            raise RegistryError(f"manifest for {what} does not match its digest (got {computed})")
        media_type = body.get("mediaType") or response.headers.get("Content-Type", "").split(";")[0].strip()
        if not body.get("mediaType") and media_type not in (*MANIFEST_TYPES, *MANIFEST_LIST_TYPES):
            # OCI allows omitting mediaType: tell an index from a manifest by its shape
            media_type = OCI_INDEX if "manifests" in body else OCI_MANIFEST if "config" in body else media_type
        if media_type in DOCKER_MANIFEST_V1 or body.get("schemaVersion") == 1:
            raise RegistryError(f"{what} uses the deprecated schema 1 manifest format, which is not supported")
        if media_type not in (*MANIFEST_TYPES, *MANIFEST_LIST_TYPES):
            raise RegistryError(f"{what} has an unsupported media type {media_type!r}")
        return body, media_type, digest

    def blob_json(self, repository: str, digest: str) -> Any:
        repository = self._check_repository(repository)
        what = f"blob {repository}@{digest}"
        response = self._request("GET", f"/v2/{repository}/blobs/{digest}", what=what)
        if digest.startswith("sha256:") and "sha256:" + hashlib.sha256(response.content).hexdigest() != digest:
            raise RegistryError(f"{what} does not match its digest")
        return self._json(response, what)

    def image_infos(self, repository: str, tag: str) -> list[ImageInfo]:
        """One :class:`ImageInfo` per platform of ``repository:tag`` (one for a plain manifest)."""
        body, media_type, digest = self.manifest(repository, tag)
        if media_type in MANIFEST_TYPES:
            return [self._info_from_manifest(repository, tag, body, media_type, digest)]
        infos = []
        for entry in self._platform_entries(repository, tag, body):
            child, child_type, child_digest = self.manifest(repository, entry["digest"])
            if child_type not in MANIFEST_TYPES:
                raise RegistryError(f"{repository}:{tag}: nested index {entry['digest']} is not supported")
            infos.append(self._info_from_manifest(repository, tag, child, child_type, child_digest,
                                                  index_digest=digest, platform=entry.get("platform")))
        return infos

    def image_info(self, repository: str, tag: str, architecture: str | None = None) -> ImageInfo:
        """The image ``repository:tag`` for one architecture (default: this machine's).

        A plain manifest is returned whatever its architecture; from a manifest
        list or OCI index the entry for ``architecture`` (``x86_64``/``amd64``,
        ``aarch64``/``arm64``, ...) is picked, and a missing one is an error.
        """
        body, media_type, digest = self.manifest(repository, tag)
        if media_type in MANIFEST_TYPES:
            return self._info_from_manifest(repository, tag, body, media_type, digest)
        want = normalize_architecture(architecture) or _host_architecture()
        entries = self._platform_entries(repository, tag, body)
        matching = [e for e in entries
                    if normalize_architecture((e.get("platform") or {}).get("architecture")) == want]
        if not matching:
            available = sorted({normalize_architecture((e.get("platform") or {}).get("architecture"))
                                for e in entries})
            raise RegistryError(f"{repository}:{tag} has no image for architecture {want!r} "
                                f"(available: {', '.join(available) or 'none'})", status=404)
        # prefer linux, then the most specific (v8 over none for arm64 is fine either way)
        matching.sort(key=lambda e: ((e.get("platform") or {}).get("os") != "linux",))
        entry = matching[0]
        child, child_type, child_digest = self.manifest(repository, entry["digest"])
        if child_type not in MANIFEST_TYPES:
            raise RegistryError(f"{repository}:{tag}: nested index {entry['digest']} is not supported")
        return self._info_from_manifest(repository, tag, child, child_type, child_digest,
                                        index_digest=digest, platform=entry.get("platform"))

    def scan(self, repositories: Iterable[str] | None = None) -> ScanResult:
        """Every platform of every tag of ``repositories`` (default: the whole catalog).

        A failing repository or image is recorded in ``errors`` and skipped; a
        failing catalog (unreachable, refused) raises :class:`RegistryError`.
        """
        result = ScanResult()
        names = list(repositories) if repositories is not None else self.catalog()
        for repository in names:
            try:
                tags = self.tags(repository)
            except RegistryError as exc:
                result.errors.append((repository, exc.message))
                continue
            for tag in tags:
                try:
                    result.images.extend(self.image_infos(repository, tag))
                except RegistryError as exc:
                    result.errors.append((f"{repository}:{tag}", exc.message))
        return result

    def iter_scan(self, repositories: Iterable[str] | None = None) -> Iterator[ImageInfo | RegistryError]:
        """Like :meth:`scan`, but yields each image (or per-image error) as it is fetched."""
        names = list(repositories) if repositories is not None else self.catalog()
        for repository in names:
            try:
                tags = self.tags(repository)
            except RegistryError as exc:
                yield exc
                continue
            for tag in tags:
                try:
                    yield from self.image_infos(repository, tag)
                except RegistryError as exc:
                    yield exc

    # --- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _check_repository(repository: str) -> str:
        if not isinstance(repository, str) or not _REPO_RE.fullmatch(repository):
            raise RegistryError(f"invalid repository name: {repository!r}")
        return repository

    @staticmethod
    def _platform_entries(repository: str, tag: str, index: Mapping[str, Any]) -> list[dict[str, Any]]:
        entries = index.get("manifests")
        if not isinstance(entries, list):
            raise RegistryError(f"malformed index for {repository}:{tag}: no manifests list")
        usable = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
                raise RegistryError(f"malformed index for {repository}:{tag}: an entry has no digest")
            plat = entry.get("platform") or {}
            annotations = entry.get("annotations") or {}
            if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
                continue
            if plat.get("os") == "unknown" or plat.get("architecture") == "unknown":
                continue
            usable.append(entry)
        return usable

    def _info_from_manifest(self, repository: str, tag: str, manifest: Mapping[str, Any], media_type: str,
                            digest: str, index_digest: str | None = None,
                            platform: Mapping[str, Any] | None = None) -> ImageInfo:
        ref = f"{repository}:{tag}"
        config = manifest.get("config")
        layers = manifest.get("layers")
        if not isinstance(config, dict) or not isinstance(config.get("digest"), str) or not isinstance(layers, list):
            raise RegistryError(f"malformed manifest for {ref}: missing config or layers")
        try:
            size = int(config.get("size") or 0) + sum(int(layer.get("size") or 0) for layer in layers)
        except (TypeError, ValueError, AttributeError) as exc:
            raise RegistryError(f"malformed manifest for {ref}: bad sizes") from exc
        blob = self.blob_json(repository, config["digest"])
        if not isinstance(blob, dict):
            raise RegistryError(f"malformed image config for {ref}: not an object")
        container_config = blob.get("config") or {}
        labels = container_config.get("Labels") or {} if isinstance(container_config, dict) else {}
        if not isinstance(labels, dict):
            raise RegistryError(f"malformed image config for {ref}: Labels is not an object")
        platform = platform or {}
        raw_arch = blob.get("architecture") or platform.get("architecture") or ""
        return ImageInfo(
            canonical=f"{self.registry_name}/{repository}:{tag}",
            registry=self.registry_name,
            repository=repository,
            tag=tag,
            digest=digest,
            size=size,
            architecture=normalize_architecture(raw_arch),
            os=blob.get("os") or platform.get("os") or "",
            labels={str(k): "" if v is None else str(v) for k, v in labels.items()},
            config_digest=config["digest"],
            media_type=media_type,
            platform_architecture=raw_arch,
            variant=blob.get("variant") or platform.get("variant"),
            index_digest=index_digest,
        )


# --- image label parsers ----------------------------------------------------------------------

SERVICE_PORT_PROTOCOLS = ("http", "tcp", "pty", "preopen", "vnc", "rdp", "internal")
# ports the kernel runner itself uses inside every container (REPL in/out, kernel
# runner, sshd, ttyd): an image may not declare them as services
RESERVED_PORTS = frozenset({2000, 2001, 2002, 2003, 2200, 7681})
_SERVICE_PORT_RE = re.compile(
    r"\s*(?P<name>[^:,\s\[\]]+)\s*:\s*(?P<proto>[^:,\s\[\]]+)\s*:\s*"
    r"(?P<ports>\[[^\]]*\]|[^,:\s\[\]]+)\s*(?:,|$)")
_SERVICE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _parse_port(text: str, entry: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise ImageLabelError(f"service port {entry!r}: {text!r} is not a port number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ImageLabelError(f"service port {entry!r}: {port} is out of range 1-65535")
    if port in RESERVED_PORTS:
        raise ImageLabelError(f"service port {entry!r}: port {port} is reserved for Backend.AI's own use "
                              f"({', '.join(map(str, sorted(RESERVED_PORTS)))})")
    return port


def parse_service_ports(label_value: str | None) -> list[dict[str, Any]]:
    """Parse ``ai.backend.service-ports``: ``name:proto:port`` entries, comma-separated.

    ``port`` may be a list ``[8080,8081]``.  Returns
    ``[{"name": "web", "protocol": "http", "container_ports": [8080]}, ...]``; an
    empty or missing label gives ``[]``.  Raises :class:`ImageLabelError` for an
    unknown protocol, a bad or reserved port, or a name or port used twice.
    """
    if label_value is None:
        return []
    if not isinstance(label_value, str):
        raise ImageLabelError(f"service ports label must be a string, not {type(label_value).__name__}")
    text = label_value.strip().rstrip(",").strip()
    if not text:
        return []
    result: list[dict[str, Any]] = []
    names: set[str] = set()
    used_ports: dict[int, str] = {}
    pos = 0
    while pos < len(text):
        match = _SERVICE_PORT_RE.match(text, pos)
        if not match or match.end() == pos:
            rest = text[pos:].split(",")[0].strip()
            raise ImageLabelError(f"malformed service port entry {rest!r}: expected name:protocol:port")
        pos = match.end()
        entry = match.group(0).strip().rstrip(",").strip()
        name, proto, ports_text = match["name"], match["proto"].lower(), match["ports"]
        if not _SERVICE_NAME_RE.fullmatch(name):
            raise ImageLabelError(f"service port {entry!r}: invalid name {name!r}")
        if proto not in SERVICE_PORT_PROTOCOLS:
            raise ImageLabelError(f"service port {entry!r}: unknown protocol {proto!r} "
                                  f"(expected one of {', '.join(SERVICE_PORT_PROTOCOLS)})")
        if ports_text.startswith("["):
            inner = ports_text[1:-1].strip()
            if not inner:
                raise ImageLabelError(f"service port {entry!r}: empty port list")
            ports = [_parse_port(p, entry) for p in inner.split(",")]
        else:
            ports = [_parse_port(ports_text, entry)]
        if name in names:
            raise ImageLabelError(f"service port {entry!r}: the name {name!r} is used twice")
        names.add(name)
        for port in ports:
            if port in used_ports:
                raise ImageLabelError(f"service port {entry!r}: port {port} is already used by "
                                      f"{used_ports[port]!r}")
            used_ports[port] = name
        result.append({"name": name, "protocol": proto, "container_ports": ports})
    return result


_RESOURCE_LABEL_RE = re.compile(r"ai\.backend\.resource\.(min|max)\.(.+)")
_BYTE_LIKE_SLOTS = frozenset({"mem", "shmem"})


def _format_amount(value: Decimal) -> str:
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def parse_resource_limits(labels: Mapping[str, Any] | None) -> dict[str, dict[str, str | None]]:
    """``ai.backend.resource.{min,max}.<slot>`` labels -> ``{slot: {"min": str, "max": str | None}}``.

    Byte slots (``mem``, ``*.mem``, ``shmem``) accept binary sizes (``64m``) and
    come back as decimal byte strings (``"67108864"``); other slots are counts
    (``"0.5"``).  A slot with only a maximum gets ``"min": "0"``; a missing or
    infinite maximum is ``None``.  Raises :class:`ImageLabelError` for a bad
    value or a minimum above the maximum.
    """
    limits: dict[str, dict[str, str | None]] = {}
    parsed: dict[str, dict[str, Decimal]] = {}
    for key, raw in sorted((labels or {}).items()):
        match = _RESOURCE_LABEL_RE.fullmatch(str(key))
        if not match:
            continue
        bound, slot = match.groups()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*", slot):
            raise ImageLabelError(f"label {key}: invalid slot name {slot!r}")
        is_bytes = slot in _BYTE_LIKE_SLOTS or slot_type_of(slot) == "bytes"
        try:
            value = parse_binary_size(raw, slot) if is_bytes else parse_count(raw, slot)
        except SlotError as exc:
            raise ImageLabelError(f"label {key}: {exc}") from None
        if value.is_infinite() and bound == "min":
            raise ImageLabelError(f"label {key}: a minimum cannot be infinite")
        parsed.setdefault(slot, {})[bound] = value
    for slot, bounds in sorted(parsed.items()):
        low = bounds.get("min", Decimal(0))
        high = bounds.get("max")
        if high is not None and high.is_infinite():
            high = None
        if high is not None and low > high:
            raise ImageLabelError(f"slot {slot!r}: minimum {_format_amount(low)} exceeds maximum "
                                  f"{_format_amount(high)}")
        limits[slot] = {"min": _format_amount(low), "max": None if high is None else _format_amount(high)}
    return limits
