# Shared by scripts that need a Docker engine (scripts/test, scripts/build-test-images, ...).
#
#   . scripts/lib/docker.sh
#   ensure_docker            # a Docker engine answers `docker info` (installs/starts one if it can)
#   ensure_busybox_static    # /bin/busybox is Debian's statically linked busybox
#   ensure_registry_binary   # Debian's docker-registry (the Distribution registry v2) is installed
#   ensure_htpasswd          # apache2-utils' htpasswd (bcrypt htpasswd files for the registry)
#   ensure_ssh_server_files  # Debian's dropbear-bin + its libraries + sftp-server, unpacked under
#                            # var/cache/ssh-server/root (for the bai-test/ssh image); sets SSH_SERVER_ROOT
#
# Every function is idempotent and prints nothing when there is nothing to do;
# each returns non-zero with a message on stderr when it cannot do its job.
# Only root with apt-get installs anything; otherwise a missing piece is an error.

_DOCKER_SH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

_docker_can_apt() {
  [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1
}

# _docker_apt_install <package>...: apt-get update (once per shell) + install, quietly.
_docker_apt_install() {
  _docker_can_apt || { echo "error: cannot install $* (needs root and apt-get)" >&2; return 1; }
  echo "==> installing Debian's $*" >&2
  if [ -z "${_DOCKER_SH_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 \
      || echo "warning: apt-get update failed; trying the cached package lists" >&2
    _DOCKER_SH_APT_UPDATED=1
  fi
  local out
  if ! out="$(DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
              apt-get install -y -qq --no-install-recommends "$@" 2>&1)"; then
    printf '%s\n' "$out" | tail -n 20 >&2
    echo "error: apt-get install $* failed" >&2
    return 1
  fi
}

_docker_answers() {
  command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
}

_dockerd_running() {
  local pid
  if [ -r /var/run/docker.pid ]; then
    pid="$(cat /var/run/docker.pid 2>/dev/null)"
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "dockerd" ] && return 0
  fi
  if command -v pgrep >/dev/null 2>&1; then
    pgrep -x dockerd >/dev/null 2>&1
    return
  fi
  grep -qx dockerd /proc/[0-9]*/comm 2>/dev/null
}

ensure_docker() {
  _docker_answers && return 0

  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    if _docker_can_apt; then
      _docker_apt_install docker.io || return 1
    fi
  fi
  if ! command -v docker >/dev/null 2>&1; then
    echo "error: the docker client is not installed (apt-get install docker.io)" >&2
    return 1
  fi
  _docker_answers && return 0   # the package's own service may have started it

  if ! command -v dockerd >/dev/null 2>&1; then
    echo "error: no Docker engine answers and dockerd is not installed (apt-get install docker.io)" >&2
    return 1
  fi
  # A dockerd already running but not answering yet (starting up) is waited for, not doubled.
  local log="an already running dockerd"
  if ! _dockerd_running; then
    if [ "$(id -u)" != "0" ]; then
      echo "error: no Docker engine answers and starting dockerd needs root" >&2
      return 1
    fi
    local log_dir="/tmp"
    [ -d "$_DOCKER_SH_ROOT/var" ] && [ -w "$_DOCKER_SH_ROOT/var" ] && log_dir="$_DOCKER_SH_ROOT/var"
    log="$log_dir/dockerd.log"
    echo "==> starting dockerd (log: $log)" >&2
    # setsid + nohup: the daemon outlives this script and its terminal/process group.
    setsid nohup dockerd >>"$log" 2>&1 </dev/null &
    disown 2>/dev/null || true
  fi
  local waited=0
  while [ "$waited" -lt 60 ]; do
    _docker_answers && return 0
    sleep 1
    waited=$((waited + 1))
  done
  echo "error: dockerd did not answer \`docker info\` within 60 s (${log})" >&2
  return 1
}

_busybox_is_static() {
  [ -x /bin/busybox ] || return 1
  # ldd prints "not a dynamic executable" (and exits 1) for static binaries.
  # (output captured first: callers may run under `set -o pipefail`)
  local out
  if command -v ldd >/dev/null 2>&1; then
    out="$(ldd /bin/busybox 2>&1 || true)"
    case "$out" in *"not a dynamic"*|*"statically linked"*) return 0 ;; esac
    return 1
  fi
  # without ldd: a static ELF has no PT_INTERP program header
  if command -v readelf >/dev/null 2>&1; then
    out="$(readelf -l /bin/busybox 2>/dev/null || true)"
    case "$out" in *INTERP*) return 1 ;; *) [ -n "$out" ] && return 0 ;; esac
  fi
  # last resort: ask busybox itself (a dynamic one would still run here, so be strict about the package)
  dpkg -s busybox-static >/dev/null 2>&1
}

ensure_busybox_static() {
  _busybox_is_static && return 0
  _docker_can_apt && _docker_apt_install busybox-static
  _busybox_is_static && return 0
  echo "error: /bin/busybox is missing or not statically linked (apt-get install busybox-static)" >&2
  return 1
}

ensure_registry_binary() {
  command -v docker-registry >/dev/null 2>&1 && return 0
  _docker_can_apt && _docker_apt_install docker-registry
  command -v docker-registry >/dev/null 2>&1 && return 0
  echo "error: docker-registry is not installed (apt-get install docker-registry)" >&2
  return 1
}

ensure_htpasswd() {
  command -v htpasswd >/dev/null 2>&1 && return 0
  _docker_can_apt && _docker_apt_install apache2-utils
  command -v htpasswd >/dev/null 2>&1 && return 0
  echo "error: htpasswd is not installed (apt-get install apache2-utils)" >&2
  return 1
}

# The packages unpacked for the test image's SSH server: dropbear and the two libraries Debian
# links it against that a host rarely has, plus OpenSSH's sftp-server (scp since OpenSSH 9 speaks SFTP).
_SSH_SERVER_DEBS="dropbear-bin libtomcrypt1 libtommath1 openssh-sftp-server"

ensure_ssh_server_files() {
  local cache="$_DOCKER_SH_ROOT/var/cache/ssh-server"
  SSH_SERVER_ROOT="$cache/root"
  export SSH_SERVER_ROOT
  [ -x "$SSH_SERVER_ROOT/usr/sbin/dropbear" ] && [ -x "$SSH_SERVER_ROOT/usr/lib/openssh/sftp-server" ] && return 0
  command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 \
    || { echo "error: apt-get and dpkg-deb are needed to fetch dropbear-bin for the ssh test image" >&2; return 1; }
  mkdir -p "$cache/debs" && rm -f "$cache"/debs/*.deb || return 1
  echo "==> downloading Debian's $_SSH_SERVER_DEBS (for bai-test/ssh)" >&2
  # `apt-get download` fetches into the current directory, as any user (no install)
  if ! (cd "$cache/debs" && apt-get download $_SSH_SERVER_DEBS >/dev/null 2>&1); then
    if _docker_can_apt && [ -z "${_DOCKER_SH_APT_UPDATED:-}" ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
      _DOCKER_SH_APT_UPDATED=1
    fi
    (cd "$cache/debs" && apt-get download $_SSH_SERVER_DEBS >/dev/null 2>&1) \
      || { echo "error: apt-get download $_SSH_SERVER_DEBS failed" >&2; return 1; }
  fi
  rm -rf "$SSH_SERVER_ROOT.tmp" && mkdir -p "$SSH_SERVER_ROOT.tmp" || return 1
  local deb
  for deb in "$cache"/debs/*.deb; do
    dpkg-deb -x "$deb" "$SSH_SERVER_ROOT.tmp" || { echo "error: cannot unpack $deb" >&2; return 1; }
  done
  rm -rf "$SSH_SERVER_ROOT" && mv "$SSH_SERVER_ROOT.tmp" "$SSH_SERVER_ROOT"
  [ -x "$SSH_SERVER_ROOT/usr/sbin/dropbear" ] || { echo "error: dropbear-bin has no /usr/sbin/dropbear" >&2; return 1; }
}
