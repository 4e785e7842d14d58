"""The session's SSH keypair inside a kernel, and the image's SSH server (shared by the backends).

The manager sends the keypair in the kernel's spec (``KernelSpec.ssh_keypair``) while
the kernel is being created.  Every backend writes it into the kernel's work
directory (``/home/work`` in a container, ``<scratch>/<kernel>/home/work`` for a
local kernel):

* ``id_container``: the private key, mode 600: what ``backend.ai session ssh``
  downloads (``session download <s> id_container``) to log in with;
* ``.ssh/authorized_keys``: the public key, mode 600, in ``.ssh`` (mode 700);

owned by the image's ``work`` user when it has one (an SSH server refuses keys
that others could change).  The private key is never logged.  A Docker agent that
runs as root keeps the files on its host (``<scratch>/ssh/<kernel>/``) and bind-mounts
them, so that ``docker commit`` of the kernel never bakes the private key into an
image; otherwise it copies them into the container (:func:`key_tar`).

A kernel whose spec has the ``sshd`` service port (:data:`agents.protocol.SSHD_PORT`)
gets the image's SSH server started on that port by :data:`SSHD_SCRIPT`
(Dropbear: host keys made at the first connection, password logins off).
"""
from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

from agents.protocol import SshKeypair

__all__ = ["AUTHORIZED_KEYS", "KEY_FILE", "SSHD_SCRIPT", "SSH_DIR", "WORK_USER", "chown_key_files", "key_tar",
           "work_ids", "write_key_files"]

KEY_FILE = "id_container"
SSH_DIR = ".ssh"
AUTHORIZED_KEYS = ".ssh/authorized_keys"
WORK_USER = "work"

#: Run in the container with the port as ``$1``: starts the image's SSH server in the
#: background (it daemonizes) and exits 0, or explains on stderr why it could not.
SSHD_SCRIPT = r"""port="$1"
if command -v dropbear >/dev/null 2>&1; then
  mkdir -p /etc/dropbear
  # -R: host keys generated at the first connection; -s: no password logins; forks into the background
  exec dropbear -R -s -p "$port"
fi
echo "this image has no SSH server (dropbear) on its PATH" >&2
exit 127
"""


def work_ids(passwd: str, user: str = WORK_USER) -> tuple[int, int] | None:
    """``(uid, gid)`` of ``user`` in an ``/etc/passwd`` text, or ``None``."""
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == user:
            try:
                return int(fields[2]), int(fields[3])
            except ValueError:
                return None
    return None


def key_tar(keypair: SshKeypair, prefix: str = "home/work", uid: int = 0, gid: int = 0) -> bytes:
    """A tar stream of the key files under ``prefix`` (for ``put_archive`` at ``/``): only the
    files and ``.ssh``, so existing parent directories keep their owner and mode."""
    buf = io.BytesIO()
    now = int(time.time())
    prefix = prefix.strip("/")
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"{prefix}/{SSH_DIR}")
        info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, 0o700, uid, gid, now
        tar.addfile(info)
        for name, text in ((AUTHORIZED_KEYS, keypair.public_key), (KEY_FILE, keypair.private_key)):
            data = text.encode()
            info = tarfile.TarInfo(f"{prefix}/{name}")
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o600, uid, gid, now
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _write_private(path: Path, data: str) -> None:
    """Write ``data`` to ``path`` with mode 600, never through a symlink (a fresh file replaces it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)
    os.replace(tmp, path)


def chown_key_files(home: Path, uid: int, gid: int) -> None:
    """Give the key files written by :func:`write_key_files` under ``home`` to ``uid:gid``."""
    for path in (home / SSH_DIR, home / AUTHORIZED_KEYS, home / KEY_FILE):
        os.chown(path, uid, gid, follow_symlinks=False)


def write_key_files(home: Path, keypair: SshKeypair) -> None:
    """The key files in a local kernel's work directory (``home``); raises ``OSError``."""
    ssh_dir = home / SSH_DIR
    if ssh_dir.is_symlink():
        raise OSError(f"{ssh_dir} is a symlink")
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    _write_private(home / AUTHORIZED_KEYS, keypair.public_key)
    _write_private(home / KEY_FILE, keypair.private_key)

