"""The naming rules of virtual folders, their files and paths: one module that
the manager (API and web forms) and the storage proxy's disk layer
(``storageproxy.paths``, ``storageproxy.fs``) all use, so create and rename,
API and web refuse the same things with the same messages.

Imports nothing from Django and does no I/O.

Everywhere (folder names, file names, every path a request names):

* no control characters (C0 including NUL, TAB, CR and LF; DEL; C1), no lone
  surrogates, no line/paragraph separators and no bidirectional overrides
  (which make ``gpj.exe`` read as ``exe.jpg``);
* no leading or trailing whitespace in a name (Unicode spaces too), so
  ``"data\\n"`` or ``" data"`` never stands for ``data``;
* a name is one component: no ``/`` inside it, never ``.`` or ``..``;
  backslashes are refused in every path (they are separators on Windows);
* lengths: a folder name at most 64 characters (the column, Backend.AI's
  limit) and 255 bytes; a file name component at most 255 bytes UTF-8; a whole
  path at most 4096 bytes.

Names that something *creates* (upload targets, mkdir, the new name of a
rename or a move, folder names) must also be safe on Windows, where the same
bytes would be read as something else: no ``:`` (drive letters such as
``C:x``, alternate data streams such as ``a:stream``), no reserved device name
(``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM1``-``COM9``, ``LPT1``-``LPT9``,
also with an extension: ``nul.txt``), no trailing dot.  Paths that only refer
to what exists (listing, downloading, deleting, the source of a move or a
rename) are held to the general rules only, so a file a session created with
such a name can still be downloaded, moved or deleted.
"""
from __future__ import annotations

import re
import unicodedata

FOLDER_NAME_MAX_CHARS = 64
NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096

#: Backend.AI's ``RESERVED_VFOLDERS``: names that would shadow a session's own files.
RESERVED_VFOLDERS = frozenset({
    ".terminfo", ".jupyter", ".tmux.conf", ".ssh", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/media",
    "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/home",
})
RESERVED_VFOLDER_PATTERNS = (re.compile(r"^\.[a-z0-9]+rc$"), re.compile(r"^\.[a-z0-9]+_profile$"))
#: Names that would collide with the API's own ``/folders/<word>`` routes.
ROUTE_NAMES = frozenset({"_", "invitations", "purge", "restore-from-trash-bin", "delete-from-trash-bin"})
#: Windows device names (reserved with any extension, in any case).
WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{kind}{n}" for kind in ("COM", "LPT") for n in [*"123456789", "\u00b9", "\u00b2", "\u00b3"]})
_FOLDER_NAME_RE = re.compile(r"[\w.\-]+")
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class InvalidName(ValueError):
    """A name or path breaks the rules; the message names the field and says why."""


def _fail(what: str, message: str) -> InvalidName:
    return InvalidName(f"{what}: {message}")


def bad_character(text: str) -> str | None:
    """A description of the first character no name may contain, or None."""
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc":
            return f"control character U+{ord(char):04X}"
        if category == "Cs":
            return "an invalid character (a lone surrogate)"
        if category in ("Zl", "Zp"):
            return f"line separator U+{ord(char):04X}"
        if char in _BIDI:
            return f"bidirectional control U+{ord(char):04X}"
    return None


def utf8_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def is_windows_device(name: str) -> bool:
    stem = name.split(".", 1)[0].rstrip(" ")
    return stem.upper() in WINDOWS_DEVICES


def check_text(value, what: str, *, max_chars: int | None = None) -> str:
    """A plain string field (a host, a project, an email): a string with no
    character from :func:`bad_character`, within ``max_chars``."""
    if not isinstance(value, str):
        raise _fail(what, "must be a string")
    bad = bad_character(value)
    if bad:
        raise _fail(what, f"must not contain {bad}")
    if max_chars is not None and len(value) > max_chars:
        raise _fail(what, f"must be at most {max_chars} characters long")
    return value


def _check_common(name: str, what: str) -> None:
    bad = bad_character(name)
    if bad:
        raise _fail(what, f"must not contain {bad}: {name!r}")
    if name != name.strip():
        raise _fail(what, f"must not start or end with whitespace: {name!r}")


def _check_windows(name: str, what: str) -> None:
    if ":" in name:
        raise _fail(what, f"must not contain ':' (a drive or stream on Windows): {name!r}")
    if is_windows_device(name):
        raise _fail(what, f"{name!r} is a reserved device name on Windows")
    if name.endswith("."):
        raise _fail(what, f"must not end with '.' (Windows drops it): {name!r}")


def check_component(name, what: str = "name", *, new: bool = True) -> str:
    """One file or directory name (a single path component)."""
    if not isinstance(name, str):
        raise _fail(what, "must be a string")
    if name == "":
        raise _fail(what, "must not be empty")
    _check_common(name, what)
    if "/" in name:
        raise _fail(what, f"must be a single name without '/': {name!r}")
    if "\\" in name:
        raise _fail(what, f"must not contain backslashes: {name!r}")
    if name in (".", ".."):
        raise _fail(what, f"{name!r} is not a name")
    if utf8_length(name) > NAME_MAX_BYTES:
        raise _fail(what, f"a name is at most {NAME_MAX_BYTES} bytes (UTF-8) long")
    if new:
        _check_windows(name, what)
    return name


def split_path(raw, what: str = "path", *, allow_root: bool = True, new: bool = False) -> tuple[str, ...]:
    """The components of a path relative to a folder root.

    ``""`` and ``"."`` are the root (when ``allow_root``); ``a//b`` and ``./a``
    are normalised; absolute paths, ``..``, backslashes and every name rule
    above are refused, never "fixed".  ``new``: the path names something to be
    created, so every component must also be safe on Windows."""
    if not isinstance(raw, str):
        raise _fail(what, "must be a string")
    bad = bad_character(raw)
    if bad:
        raise _fail(what, f"must not contain {bad}: {raw!r}")
    if "\\" in raw:
        raise _fail(what, f"must not contain backslashes: {raw!r}")
    if raw.startswith("/"):
        raise _fail(what, f"must be relative to the folder, not absolute: {raw!r}")
    if utf8_length(raw) > PATH_MAX_BYTES:
        raise _fail(what, f"a path is at most {PATH_MAX_BYTES} bytes long")
    parts = []
    for part in raw.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise _fail(what, f"must not contain '..': {raw!r}")
        parts.append(check_component(part, what, new=new))
    if not parts and not allow_root:
        raise _fail(what, "must name a file or directory inside the folder, not the folder itself")
    return tuple(parts)


def check_folder_name(name, what: str = "name") -> str:
    """A folder name, the same on create, rename and clone."""
    if not isinstance(name, str) or name == "":
        raise _fail(what, "a folder name is required")
    _check_common(name, what)
    if len(name) > FOLDER_NAME_MAX_CHARS or utf8_length(name) > NAME_MAX_BYTES:
        raise _fail(what, f"a folder name is at most {FOLDER_NAME_MAX_CHARS} characters long")
    if not _FOLDER_NAME_RE.fullmatch(name) or name.strip(".") == "":
        raise _fail(what, f"invalid folder name {name!r}: use letters, digits, '_', '-' and '.' "
                          "(it may start with '.')")
    _check_windows(name, what)
    if not verify_vfolder_name(name):
        raise _fail(what, f"{name!r} is a reserved name that sessions use for their own files")
    if name in ROUTE_NAMES:
        raise _fail(what, f"{name!r} is reserved by the folder API")
    return name


def verify_vfolder_name(name: str) -> bool:
    """Backend.AI's rule: reserved names and ``.xxxrc`` / ``.xxx_profile`` are refused."""
    if name in RESERVED_VFOLDERS:
        return False
    return not any(p.match(name) for p in RESERVED_VFOLDER_PATTERNS)


# --- archives ---------------------------------------------------------------------------------

def archive_component(name: str) -> str:
    """A name found on disk as it may appear in an archive entry: every character
    that a name may not contain, backslashes and ``:`` become ``_``, trailing
    dots and spaces are dropped, Windows device names get a ``_`` prefix, and
    ``.``/``..`` (or nothing left) become ``_``."""
    out = []
    for char in name:
        if char in "\\/:" or bad_character(char):
            out.append("_")
        else:
            out.append(char)
    cleaned = "".join(out).rstrip(". ").lstrip(" ")
    if cleaned in ("", ".", ".."):
        cleaned = "_"
    if is_windows_device(cleaned):
        cleaned = "_" + cleaned
    while utf8_length(cleaned) > NAME_MAX_BYTES:
        cleaned = cleaned[:-1]
    return cleaned


class ArchiveNames:
    """Entry names for one archive: each on-disk path mapped to a safe, unique
    one (``name~2.ext`` when two sanitised names of a directory collide).
    ``renamed`` lists what changed, for the log."""

    def __init__(self, top: str):
        self.top = archive_component(top)
        self._mapped: dict[tuple[str, ...], tuple[str, ...]] = {(): (self.top,)}
        self._used: dict[tuple[str, ...], set[str]] = {}
        self.renamed: list[tuple[str, str]] = []

    def entry(self, rel: tuple[str, ...]) -> str:
        """The archive path of ``rel`` (a path relative to the archived directory,
        whose parent was asked for before)."""
        parent = self._mapped.get(rel[:-1])
        if parent is None:  # a parent not seen (should not happen): map it on the way
            self.entry(rel[:-1])
            parent = self._mapped[rel[:-1]]
        original = rel[-1]
        used = self._used.setdefault(parent, set())
        safe = archive_component(original)
        if safe in used:
            stem, dot, ext = safe.partition(".") if not safe.startswith(".") else (safe, "", "")
            n = 2
            while True:
                candidate = f"{stem}~{n}{dot}{ext}"
                if candidate not in used:
                    safe = candidate
                    break
                n += 1
        used.add(safe)
        mapped = parent + (safe,)
        self._mapped[rel] = mapped
        if safe != original:
            self.renamed.append(("/".join(rel), "/".join(mapped)))
        return "/".join(mapped)
