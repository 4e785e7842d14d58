"""``loopquota``: a scope with a limit is its own ext4 filesystem, so the kernel refuses
the bytes past the limit (``ENOSPC``), whoever writes them: the proxy, a session through its
mount, a clone.

Each limited scope has a sparse image ``<volume>/.scopes/<scope>.img`` (``mkfs.ext4 -m 0``,
one inode per 16 KiB) loop-mounted at the scope's directory ``<volume>/<scope>``; its staged
uploads live inside it (``<scope>/.staging``), so the final rename is atomic and staged bytes
count against the limit.  The image is sized so that the bytes available to files are at
least the limit (the ext4 metadata and its reserved clusters come on top, measured after
``mkfs`` and grown until they fit).  Raising a limit grows the image online (``truncate``,
``losetup -c``, ``resize2fs``); lowering it shrinks the image offline (the scope must not be
in use) and is refused below what the scope already holds.  A scope without a limit is a
plain directory; setting a limit copies it into a new image, unsetting copies it back.
Images are mounted again when the proxy starts.

Production sites should prefer XFS project quotas (no image, no copy); this backend exists
because a kernel built without ``CONFIG_QUOTA`` (the test machines') has no quota at all."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

from storageproxy import fs, treecopy
from storageproxy.backends.base import SCOPES_DIRNAME, Allowance, BadLimit, QuotaFull, Volume
from storageproxy.paths import PathConflict, StorageError, scope_dirname

log = logging.getLogger(__name__)

MIB = 2**20
SLACK_BYTES = 256 * 1024  # directory blocks of the folders' <xx>/<yy> levels and the like
MIN_IMAGE_BYTES = MIB  # mkfs.ext4's smallest useful image (no journal below a few MiB)
JOURNAL_GUESS = 4 * MIB  # ext4's journal on a small filesystem (1024 blocks); measured and corrected after mkfs
INTERNAL = frozenset({"lost+found", fs.STAGING_DIRNAME})
COMMAND_TIMEOUT = 120


class CommandFailed(StorageError):
    pass


def _run(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except FileNotFoundError:
        raise CommandFailed(f"{args[0]} is not installed on the storage host") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{args[0]} did not finish in {COMMAND_TIMEOUT} s") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise CommandFailed(f"{' '.join(args[:2])} failed: {message[-1] if message else done.returncode}")
    return done.stdout


def _fsck(image: Path) -> None:
    """``e2fsck -f -y``: 0 (clean) and 1 (errors corrected) are fine."""
    try:
        done = subprocess.run(["e2fsck", "-f", "-y", str(image)], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        raise CommandFailed(f"e2fsck failed: {exc}") from None
    if done.returncode not in (0, 1):
        raise CommandFailed(f"e2fsck {image.name} failed ({done.returncode}): {done.stdout.strip()[-300:]}")


def _round_up(value: int, unit: int = MIB) -> int:
    return -(-value // unit) * unit


def mount_source(mountpoint: Path) -> str | None:
    """The device mounted at ``mountpoint`` (from /proc/self/mountinfo), or None."""
    wanted = os.path.realpath(mountpoint)
    found = None
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                sep = fields.index("-")
                point = fields[4].encode().decode("unicode_escape")
                if point == wanted:
                    found = fields[sep + 2]
    except (OSError, ValueError):
        return None
    return found


def loops_of(image: Path) -> list[str]:
    """The loop devices backed by ``image``."""
    try:
        out = _run("losetup", "-j", str(image), "-n", "-O", "NAME")
    except CommandFailed:
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def unmount(mountpoint: Path, image: Path | None = None) -> None:
    """Unmount ``mountpoint`` and detach the loop devices of ``image``."""
    if os.path.ismount(mountpoint):
        try:
            _run("umount", str(mountpoint))
        except CommandFailed as exc:
            if "busy" in str(exc).lower():
                raise PathConflict("The quota scope is in use (open files or mounts); try again later") from None
            raise
    if image is not None:
        for device in loops_of(image):
            try:
                _run("losetup", "-d", device)
            except CommandFailed as exc:
                log.warning("cannot detach %s: %s", device, exc)


class LoopQuotaVolume(Volume):
    backend = "loopquota"
    capabilities = ("quota", "file-ops", "clone", "fs-enforced-quota")

    def image(self, qsid: str) -> Path:
        return self.root / SCOPES_DIRNAME / f"{scope_dirname(qsid)}.img"

    def _limited(self, qsid: str) -> bool:
        return self.image(qsid).exists() and os.path.ismount(self.scope_dir(qsid))

    def staging_dir(self, qsid: str) -> Path:
        if self._limited(qsid):
            return self.scope_dir(qsid) / fs.STAGING_DIRNAME
        return super().staging_dir(qsid)

    def staging_dirs(self) -> list[Path]:
        found = super().staging_dirs()
        for image in sorted((self.root / SCOPES_DIRNAME).glob("*.img")):
            inner = self.root / image.stem / fs.STAGING_DIRNAME
            if inner.is_dir():
                found.append(inner)
        return found

    def _scope_internal_names(self) -> frozenset[str]:
        return INTERNAL

    # --- life ----------------------------------------------------------------------------------
    def startup(self) -> None:
        super().startup()
        for tool in ("mkfs.ext4", "resize2fs", "e2fsck", "losetup", "mount", "umount"):
            if shutil.which(tool) is None:
                raise StorageError(f"volume {self.name}: the loopquota backend needs {tool}")
        for image in sorted((self.root / SCOPES_DIRNAME).glob("*.img")):
            mountpoint = self.root / image.stem
            if os.path.ismount(mountpoint):
                log.info("volume %s: scope %s is mounted already", self.name, image.stem)
                continue
            mountpoint.mkdir(mode=self.dir_mode, exist_ok=True)
            self._mount(image, mountpoint)
            log.info("volume %s: mounted scope %s from %s", self.name, image.stem, image)

    # --- mounting ------------------------------------------------------------------------------
    def _mount(self, image: Path, mountpoint: Path) -> None:
        _run("mount", "-t", "ext4", "-o", "loop,nosuid,nodev", str(image), str(mountpoint))
        os.chmod(mountpoint, self.dir_mode)

    def _available(self, mountpoint: Path) -> int:
        info = os.statvfs(mountpoint)
        return info.f_bavail * info.f_frsize

    def _fit(self, image: Path, mountpoint: Path, limit: int) -> None:
        """Grow the mounted image until the bytes available to files cover the limit."""
        target = limit + SLACK_BYTES
        for _attempt in range(8):
            shortfall = target - self._available(mountpoint)
            if shortfall <= 0:
                return
            step = shortfall + shortfall // 32 + 64 * 1024  # new block groups bring their own metadata
            self._grow(image, mountpoint, _round_up(image.stat().st_size + step, 64 * 1024))
        raise CommandFailed(f"the image of {mountpoint} does not grow to {limit} usable bytes")

    def _grow(self, image: Path, mountpoint: Path, new_size: int) -> None:
        """Online (``losetup -c`` + ``resize2fs`` on the device, which needs CAP_SYS_RESOURCE), else
        offline: unmounted, checked, resized and mounted again (the scope must not be in use)."""
        device = mount_source(mountpoint)
        try:
            if device is None or not device.startswith("/dev/loop"):
                raise CommandFailed(f"cannot find the loop device of {mountpoint}")
            os.truncate(image, new_size)
            _run("losetup", "-c", device)
            _run("resize2fs", device)
            return
        except CommandFailed as exc:
            log.info("volume %s: online resize of %s not possible (%s); resizing it offline", self.name,
                     image.name, exc)
        unmount(mountpoint, image)
        try:
            os.truncate(image, max(new_size, image.stat().st_size))
            _fsck(image)
            _run("resize2fs", str(image))
        finally:
            self._mount(image, mountpoint)

    def _new_image(self, image: Path, mountpoint: Path, limit: int) -> None:
        image.parent.mkdir(mode=0o700, exist_ok=True)
        # inode tables (256 bytes per 16 KiB) and the reserved clusters (2 %) come to about 4 %
        journal = JOURNAL_GUESS if limit >= JOURNAL_GUESS else 0  # mkfs makes none on a tiny image
        size = max(MIN_IMAGE_BYTES, _round_up(limit + limit // 25 + SLACK_BYTES + journal, 64 * 1024))
        with open(image, "wb") as fh:
            fh.truncate(size)
        _run("mkfs.ext4", "-q", "-F", "-m", "0", "-i", "16384", "-b", "4096", "-E", "nodiscard",
             "-L", "bai-scope", str(image))
        mountpoint.mkdir(mode=self.dir_mode, exist_ok=True)
        self._mount(image, mountpoint)
        try:
            self._fit(image, mountpoint, limit)
            lost = mountpoint / "lost+found"
            if lost.is_dir():
                os.chmod(lost, 0o700)
        except BaseException:
            unmount(mountpoint, image)
            raise

    # --- limits --------------------------------------------------------------------------------
    def _apply_limit(self, qsid: str, limit: int | None) -> None:
        image, directory = self.image(qsid), self.scope_dir(qsid)
        if limit is None:
            if image.exists():
                self._to_plain(qsid)
            self._write_limit(qsid, None)
            return
        used, _ = self.scope_usage(qsid)
        if used > limit:
            raise BadLimit(f"The quota scope {qsid} already holds {used} bytes, more than the limit of {limit}")
        if not image.exists():
            self._to_image(qsid, limit)
        else:
            if not os.path.ismount(directory):
                self._mount(image, directory)
            self._resize(qsid, limit)
        self._write_limit(qsid, limit)
        log.info("volume %s: scope %s limited to %d bytes (image %d bytes, %d available)", self.name, qsid,
                 limit, image.stat().st_size, self._available(directory))

    def _resize(self, qsid: str, limit: int) -> None:
        image, directory = self.image(qsid), self.scope_dir(qsid)
        target = limit + SLACK_BYTES
        for _attempt in range(4):
            excess = self._available(directory) - target
            if excess <= max(MIB, target // 64) or image.stat().st_size <= MIN_IMAGE_BYTES:
                break  # close enough: not worth unmounting again
            self._shrink(image, directory, image.stat().st_size - excess)
        self._fit(image, directory, limit)

    def _shrink(self, image: Path, directory: Path, new_size: int) -> None:
        new_size = max(MIN_IMAGE_BYTES, _round_up(new_size, 64 * 1024))
        unmount(directory, image)
        try:
            _fsck(image)
            _run("resize2fs", str(image), f"{new_size // 1024}K")
            os.truncate(image, new_size)
        finally:
            self._mount(image, directory)

    def _to_image(self, qsid: str, limit: int) -> None:
        """Move a plain scope directory into a new image of ``limit`` usable bytes."""
        image, directory = self.image(qsid), self.scope_dir(qsid)
        building = self.root / SCOPES_DIRNAME / f"{image.stem}.building"
        if os.path.ismount(building):
            unmount(building)
        building.mkdir(mode=0o700, exist_ok=True)
        self._new_image(image, building, limit)
        try:
            _copy_contents(directory, building, skip=frozenset())
        except BaseException as exc:
            unmount(building, image)
            image.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise BadLimit(f"The quota scope {qsid} does not fit in {limit} bytes") from None
            raise
        unmount(building, image)
        building.rmdir()
        old = self.root / SCOPES_DIRNAME / f"{image.stem}.old"
        treecopy.discard(old)
        os.rename(directory, old)
        directory.mkdir(mode=self.dir_mode)
        self._mount(image, directory)
        treecopy.discard(old)
        fs.remove_tree(self.root / fs.STAGING_DIRNAME / image.stem)  # uploads in flight start over

    def _to_plain(self, qsid: str) -> None:
        """Copy a limited scope back to a plain directory and drop its image."""
        image, directory = self.image(qsid), self.scope_dir(qsid)
        if not os.path.ismount(directory):
            self._mount(image, directory)
        plain = self.root / SCOPES_DIRNAME / f"{image.stem}.plain"
        treecopy.discard(plain)
        plain.mkdir(mode=self.dir_mode)
        try:
            _copy_contents(directory, plain, skip=INTERNAL)
        except BaseException:
            treecopy.discard(plain)
            raise
        unmount(directory, image)
        directory.rmdir()
        os.rename(plain, directory)
        image.unlink()

    def _remove_scope(self, qsid: str) -> None:
        image, directory = self.image(qsid), self.scope_dir(qsid)
        if image.exists():
            unmount(directory, image)
            image.unlink()
        if directory.is_dir():
            shutil.rmtree(directory)

    # --- writing -------------------------------------------------------------------------------
    def upload_allowance(self, qsid: str, size: int, offset: int) -> Allowance:
        # a limited scope is its own filesystem, which refuses what does not fit (ENOSPC); an upload
        # larger than the whole limit is refused at once (the smallest image holds about 1 MiB)
        limit = self.get_limit(qsid)
        if limit is not None and size > limit:
            raise QuotaFull(f"The upload of {size} bytes is larger than the limit of the quota scope {qsid} "
                            f"({limit} bytes); the partial upload was removed", limit=limit, requested=size)
        return Allowance(size - offset, "size")

    def is_quota_error(self, exc: OSError) -> bool:
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)

    def describe(self) -> dict:
        data = super().describe()
        data["scopes_mounted"] = sum(1 for image in (self.root / SCOPES_DIRNAME).glob("*.img")
                                     if os.path.ismount(self.root / image.stem))
        return data


def _copy_contents(source: Path, target: Path, *, skip: frozenset[str]) -> None:
    """Copy what ``source`` holds into the existing directory ``target`` (links as links)."""
    with os.scandir(source) as listing:
        entries = list(listing)
    for entry in entries:
        if entry.name in skip:
            continue
        info = entry.stat(follow_symlinks=False)
        destination = target / entry.name
        if stat.S_ISDIR(info.st_mode):
            treecopy.copy_tree(Path(entry.path), destination)
        elif stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(entry.path), destination)
        elif stat.S_ISREG(info.st_mode):
            shutil.copy2(entry.path, destination, follow_symlinks=False)
