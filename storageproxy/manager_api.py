"""The manager API: what the manager asks of the storage (scopes, folders, files, transfer
tokens).  Every request but ``/health`` carries ``X-BackendAI-Storage-Auth-Token: <secret>``."""
from __future__ import annotations

import hmac
import json
import stat as stat_module
import uuid
from datetime import UTC, datetime

from aiohttp import web

from storageproxy import __version__, errors, fs, tokens
from storageproxy.app import (
    CTX_KEY,
    ProxyContext,
    blocking,
    ctx_of,
    json_response,
    observe_volume,
    problem_middleware,
)
from storageproxy.paths import clean_name, clean_relpath, display_path, parse_qsid, parse_vfid

AUTH_HEADER = "X-BackendAI-Storage-Auth-Token"
MAX_BODY = 1024 * 1024
MAX_STRING = 4096
MAX_PATHS = 1000
MAX_LIMIT = 2**62

routes = web.RouteTableDef()


# --- request checks ------------------------------------------------------------------------------

@web.middleware
async def auth_middleware(request: web.Request, handler):
    if request.path == "/health":
        return await handler(request)
    given = request.headers.get(AUTH_HEADER, "")
    secret = ctx_of(request).config.secret
    if not given or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode()):
        raise errors.AuthorizationFailed("A valid X-BackendAI-Storage-Auth-Token header is required")
    return await handler(request)


async def body_of(request: web.Request) -> dict:
    """The JSON object of the request; for GET also the query arguments (the body wins)."""
    data: dict = {}
    if request.method == "GET":
        data.update({k: v for k, v in request.query.items()})
    if request.body_exists:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise errors.PayloadTooLarge(f"A request body is at most {MAX_BODY} bytes")
        raw = await request.read()
        if raw.strip():
            try:
                parsed = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise errors.InvalidAPIParameters("The body is not valid JSON") from None
            if not isinstance(parsed, dict):
                raise errors.InvalidAPIParameters("The body must be a JSON object")
            data.update(parsed)
    request["log_context"] = {k: data.get(k) for k in ("volume", "vfid", "qsid")
                              if isinstance(data.get(k), str) and len(data.get(k)) <= 128}
    return data


def _string(data: dict, key: str, *, required: bool = True, default=None, max_len: int = MAX_STRING):
    value = data.get(key, default)
    if value is None:
        if required:
            raise errors.InvalidAPIParameters(f"{key} is required")
        return default
    if not isinstance(value, str) or len(value) > max_len:
        raise errors.InvalidAPIParameters(f"{key} must be a string of at most {max_len} characters")
    return value


def _bool(data: dict, key: str, default: bool = False) -> bool:
    value = data.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):  # query arguments
        return value.lower() in ("true", "1")
    raise errors.InvalidAPIParameters(f"{key} must be true or false")


def _vfid(data: dict, key: str = "vfid") -> str:
    value = _string(data, key, max_len=128)
    try:
        qsid, folder = parse_vfid(value, key)
    except ValueError as exc:
        raise errors.InvalidAPIParameters(str(exc)) from None
    return f"{qsid}/{folder}"


def _qsid(data: dict) -> str:
    value = _string(data, "qsid", max_len=64)
    try:
        kind, ident = parse_qsid(value)
    except ValueError as exc:
        raise errors.InvalidAPIParameters(str(exc)) from None
    return f"{kind}:{uuid.UUID(ident)}"


def _relpath(data: dict, key: str, *, allow_root: bool = True, new: bool = False, default=None):
    value = data.get(key, default)
    return clean_relpath(value, allow_root=allow_root, what=key, new=new)


def _limit(data: dict):
    options = data.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise errors.InvalidAPIParameters("options must be an object")
    if "limit_bytes" not in options and "limit_bytes" in data:
        options = {"limit_bytes": data["limit_bytes"]}
    limit = options.get("limit_bytes")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit > MAX_LIMIT:
        raise errors.InvalidAPIParameters(f"options.limit_bytes must be an integer up to {MAX_LIMIT}, or null")
    return None if limit < 0 else limit


# --- status --------------------------------------------------------------------------------------

@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


@routes.get("/")
@routes.get("/status")
async def status(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    answer = {"status": "ok", "version": __version__, "volumes": sorted(ctx.volumes)}
    if ctx.metrics_address:  # the manager's service discovery lists it (docs/observability.md)
        answer["metrics_address"] = ctx.metrics_address
    return json_response(answer)


@routes.get("/volumes")
async def volumes(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    described = [await blocking(v.describe) for _, v in sorted(ctx.volumes.items())]
    return json_response({"volumes": described})


@routes.get("/volume/performance-metric")
async def performance_metric(request: web.Request) -> web.Response:
    data = await body_of(request)
    ctx = ctx_of(request)
    volume = ctx.volume(_string(data, "volume", max_len=64))
    try:
        metric = await observe_volume(ctx, volume)
    except (OSError, ValueError, IndexError) as exc:
        raise errors.VFolderOperationFailed(
            f"The volume {volume.name} cannot be measured: {getattr(exc, 'strerror', None) or exc}") from None
    return json_response({"metric": metric})


# --- quota scopes --------------------------------------------------------------------------------

@routes.post("/quota-scope")
async def create_quota_scope(request: web.Request) -> web.Response:
    data = await body_of(request)
    volume = ctx_of(request).volume(_string(data, "volume", max_len=64))
    qsid, limit = _qsid(data), _limit(data)
    await blocking(volume.create_scope, qsid, limit)
    return json_response({"qsid": qsid, "limit_bytes": limit})


@routes.patch("/quota-scope")
async def update_quota_scope(request: web.Request) -> web.Response:
    data = await body_of(request)
    volume = ctx_of(request).volume(_string(data, "volume", max_len=64))
    qsid, limit = _qsid(data), _limit(data)
    if not await blocking(volume.scope_exists, qsid):
        raise errors.not_found("quota scope", f"No such quota scope: {qsid}")
    await blocking(volume.set_limit, qsid, limit)
    return json_response({"qsid": qsid, "limit_bytes": limit})


@routes.get("/quota-scope")
async def get_quota_scope(request: web.Request) -> web.Response:
    data = await body_of(request)
    volume = ctx_of(request).volume(_string(data, "volume", max_len=64))
    qsid = _qsid(data)
    if not await blocking(volume.scope_exists, qsid):
        raise errors.not_found("quota scope", f"No such quota scope: {qsid}")
    used, files = await blocking(volume.scope_usage, qsid)
    limit = await blocking(volume.get_limit, qsid)
    return json_response({"used_bytes": used, "file_count": files, "limit_bytes": limit})


@routes.delete("/quota-scope/quota")
async def unset_quota(request: web.Request) -> web.Response:
    data = await body_of(request)
    volume = ctx_of(request).volume(_string(data, "volume", max_len=64))
    qsid = _qsid(data)
    if not await blocking(volume.scope_exists, qsid):
        raise errors.not_found("quota scope", f"No such quota scope: {qsid}")
    await blocking(volume.set_limit, qsid, None)
    return json_response({"qsid": qsid, "limit_bytes": None})


@routes.delete("/quota-scope")
async def delete_quota_scope(request: web.Request) -> web.Response:
    data = await body_of(request)
    volume = ctx_of(request).volume(_string(data, "volume", max_len=64))
    await blocking(volume.delete_scope, _qsid(data))
    return web.Response(status=204)


# --- folders -------------------------------------------------------------------------------------

@routes.post("/folder/create")
async def folder_create(request: web.Request) -> web.Response:
    data = await body_of(request)
    volume = ctx_of(request).volume(_string(data, "volume", max_len=64))
    await blocking(volume.create_folder, _vfid(data))
    return web.Response(status=204)


@routes.post("/folder/delete")
async def folder_delete(request: web.Request) -> web.Response:
    data = await body_of(request)
    volume = ctx_of(request).volume(_string(data, "volume", max_len=64))
    await blocking(volume.delete_folder, _vfid(data))
    return web.Response(status=204)


@routes.post("/folder/clone")
async def folder_clone(request: web.Request) -> web.Response:
    data = await body_of(request)
    ctx = ctx_of(request)
    source = ctx.volume(_string(data, "src_volume", max_len=64))
    target = ctx.volume(_string(data, "dst_volume", max_len=64))
    src_vfid, dst_vfid = _vfid(data, "src_vfid"), _vfid(data, "dst_vfid")
    if source is target and src_vfid == dst_vfid:
        raise errors.InvalidAPIParameters("The source and the destination are the same folder")
    copied, files = await blocking(target.clone_folder, source, src_vfid, dst_vfid)
    return json_response({"used_bytes": copied, "file_count": files})


@routes.post("/folder/move")
async def folder_move(request: web.Request) -> web.Response:
    data = await body_of(request)
    volume = ctx_of(request).volume(_string(data, "volume", max_len=64))
    src_vfid, dst_vfid = _vfid(data, "src_vfid"), _vfid(data, "dst_vfid")
    if src_vfid == dst_vfid:
        raise errors.InvalidAPIParameters("The source and the destination are the same folder")
    await blocking(volume.move_folder, src_vfid, dst_vfid)
    return json_response({})


@routes.get("/folder/mount")
async def folder_mount(request: web.Request) -> web.Response:
    data = await body_of(request)
    volume = ctx_of(request).volume(_string(data, "volume", max_len=64))
    vfid = _vfid(data)
    subpath = _string(data, "subpath", required=False, default=".")
    return json_response({"path": await blocking(volume.mount_path, vfid, subpath)})


async def _folder_usage(request: web.Request) -> tuple[int, int]:
    """(bytes, regular files) of the folder; a missing directory holds nothing."""
    data = await body_of(request)
    volume = ctx_of(request).volume(_string(data, "volume", max_len=64))
    return await blocking(fs.usage, volume.folder_path(_vfid(data)))


@routes.get("/folder/usage")
async def folder_usage(request: web.Request) -> web.Response:
    used, files = await _folder_usage(request)
    return json_response({"file_count": files, "used_bytes": used})


@routes.get("/folder/used-bytes")
async def folder_used_bytes(request: web.Request) -> web.Response:
    used, _ = await _folder_usage(request)
    return json_response({"used_bytes": used})


# --- files ---------------------------------------------------------------------------------------

async def _folder(request: web.Request):
    data = await body_of(request)
    ctx = ctx_of(request)
    volume = ctx.volume(_string(data, "volume", max_len=64))
    vfid = _vfid(data)
    root = await blocking(volume.folder_root, vfid)
    return data, ctx, volume, vfid, root


@routes.post("/folder/file/list")
async def file_list(request: web.Request) -> web.Response:
    data, _, _, _, root = await _folder(request)
    parts = _relpath(data, "relpath", default=".")
    return json_response({"items": await blocking(root.list_dir, parts)})


def _stat(root: fs.FolderRoot, parts: tuple[str, ...]) -> dict:
    info = root.lstat(parts)
    if stat_module.S_ISLNK(info.st_mode):
        kind = "symlink"
    elif stat_module.S_ISDIR(info.st_mode):
        kind = "directory"
    elif stat_module.S_ISREG(info.st_mode):
        kind = "file"
    else:
        kind = "other"
    return {"type": kind, "size": info.st_size, "mode": info.st_mode,
            "modified": datetime.fromtimestamp(info.st_mtime, tz=UTC).isoformat()}


@routes.post("/folder/file/stat")
async def file_stat(request: web.Request) -> web.Response:
    data, _, _, _, root = await _folder(request)
    parts = _relpath(data, "relpath", default=".")
    await blocking(root.check, parts)
    return json_response(await blocking(_stat, root, parts))


@routes.post("/folder/file/mkdir")
async def file_mkdir(request: web.Request) -> web.Response:
    data, _, _, _, root = await _folder(request)
    parents, exist_ok = _bool(data, "parents"), _bool(data, "exist_ok")
    if "relpaths" in data:
        raw = data["relpaths"]
        if not isinstance(raw, list) or not raw or len(raw) > MAX_PATHS:
            raise errors.InvalidAPIParameters(f"relpaths must be a list of 1 to {MAX_PATHS} paths")
    else:
        raw = [data.get("relpath")]
    cleaned = [(item, clean_relpath(item, allow_root=False, what="relpath", new=True)) for item in raw]
    for _item, parts in cleaned:
        await blocking(root.check, parts)
    if "relpaths" not in data:  # one path: the error itself
        await blocking(root.mkdir, cleaned[0][1], parents=parents, exist_ok=exist_ok)
        return json_response({})
    success, failed = [], []
    for item, parts in cleaned:
        try:
            await blocking(root.mkdir, parts, parents=parents, exist_ok=exist_ok)
        except (fs.StorageError, OSError) as exc:  # reported per path, like the manager's 24.09 mkdir
            failed.append({"item": item, "msg": str(exc) if isinstance(exc, fs.StorageError)
                           else f"mkdir failed: {exc.strerror or exc}"})
        else:
            success.append({"item": item, "msg": None})
    return json_response({"results": {"success": success, "failed": failed}})


@routes.post("/folder/file/rename")
async def file_rename(request: web.Request) -> web.Response:
    data, _, _, _, root = await _folder(request)
    parts = _relpath(data, "relpath", allow_root=False)
    name = clean_name(data.get("new_name"), "new_name")
    await blocking(root.rename, parts, name)
    return web.Response(status=204)


@routes.post("/folder/file/move")
async def file_move(request: web.Request) -> web.Response:
    data, _, _, _, root = await _folder(request)
    src = _relpath(data, "src_relpath", allow_root=False)
    dst = _relpath(data, "dst_relpath", new=True)
    target = await blocking(root.move, src, dst)
    return json_response({"relpath": display_path(target)})


@routes.post("/folder/file/delete")
async def file_delete(request: web.Request) -> web.Response:
    data, _, _, _, root = await _folder(request)
    raw = data.get("relpaths")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_PATHS:
        raise errors.InvalidAPIParameters(f"relpaths must be a list of 1 to {MAX_PATHS} paths")
    paths = [clean_relpath(item, allow_root=False, what="relpaths") for item in raw]
    await blocking(root.delete, paths, recursive=_bool(data, "recursive"))
    return web.Response(status=204)


def _prepare_upload(volume, vfid: str, root: fs.FolderRoot, parts: tuple[str, ...], size: int) -> None:
    try:
        kind = root.kind(parts)
    except fs.NoSuchPath:
        kind = None  # missing parents are created when the upload completes
    if kind == "directory":
        raise fs.PathConflict(f"A directory exists at {display_path(parts)}")
    qsid, _ = parse_vfid(vfid)
    volume.check_room(qsid, size)


def _create_empty(volume, vfid: str, root: fs.FolderRoot, parts: tuple[str, ...], session: str) -> None:
    qsid, _ = parse_vfid(vfid)
    staging = fs.Staging(volume.staging_dir(qsid), session)
    staging.create()
    try:
        staging.finalize(root, parts, volume.file_mode)
    except BaseException:
        staging.discard()
        raise


@routes.post("/folder/file/upload")
async def file_upload(request: web.Request) -> web.Response:
    data, ctx, volume, vfid, root = await _folder(request)
    parts = _relpath(data, "relpath", allow_root=False, new=True)
    size = data.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise errors.InvalidAPIParameters("size must be a non-negative integer (bytes)")
    if size > ctx.config.max_upload_size:
        raise errors.PayloadTooLarge(f"The upload is larger than the maximum of {ctx.config.max_upload_size} bytes")
    await blocking(_prepare_upload, volume, vfid, root, parts, size)
    session = uuid.uuid4().hex
    if size == 0:  # the official client sends no PATCH for an empty file
        await blocking(_create_empty, volume, vfid, root, parts, session)
    token = tokens.issue(ctx.config.secret, {"op": "upload", "volume": volume.name, "vfid": vfid,
                                             "relpath": "/".join(parts), "size": size, "session": session},
                         ctx.config.token_lifetime)
    return json_response({"token": token, "url": ctx.config.client_url + "/upload"})


@routes.post("/folder/file/download")
async def file_download(request: web.Request) -> web.Response:
    data, ctx, volume, vfid, root = await _folder(request)
    parts = _relpath(data, "relpath", default=".")
    archive = _bool(data, "archive")
    fmt = data.get("format", "zip")
    if fmt is None:
        fmt = "zip"
    if fmt not in ("zip", "tar"):
        raise errors.InvalidAPIParameters("format must be zip or tar")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not name or len(name.encode("utf-8", "replace")) > 255):
        raise errors.InvalidAPIParameters("name must be a non-empty string of at most 255 bytes")
    kind = await blocking(root.kind, parts)
    claims = {"op": "download", "volume": volume.name, "vfid": vfid, "relpath": "/".join(parts),
              "archive": archive or kind == "directory", "format": fmt}
    if name is not None:
        claims["name"] = name  # the archive's top directory for the folder root (the folder's name)
    token = tokens.issue(ctx.config.secret, claims, ctx.config.token_lifetime)
    return json_response({"token": token, "url": ctx.config.client_url + "/download"})


def build_manager_app(ctx: ProxyContext) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[problem_middleware(), auth_middleware])
    app[CTX_KEY] = ctx
    app.add_routes(routes)
    return app
