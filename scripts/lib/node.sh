# The web UI's browser packages from npm (package.json / package-lock.json at the
# repository root), copied where the static files are served from: no bundler, no CDN.
# Usage: . scripts/lib/node.sh && ensure_browser_packages
#   ensure_browser_packages: every vendored browser package: xterm.js + its fit addon into
#   static/vendor/xterm/, htmx into static/vendor/htmx/ (npm ci once; a stamp with the
#   lock file's hash skips the work next time).  Needs node and npm (installs Debian's
#   nodejs and npm when run as root); returns 1 when it cannot.
NODE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

ensure_npm() {
  command -v npm >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian's nodejs and npm"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null) || true
  fi
  command -v npm >/dev/null 2>&1
}

ensure_browser_packages() {
  local dest="$NODE_ROOT/static/vendor/xterm" want
  want="$(sha256sum "$NODE_ROOT/package-lock.json" | cut -d' ' -f1)"
  if [ -f "$dest/.installed" ] && [ "$(cat "$dest/.installed")" = "$want" ] \
     && [ -f "$dest/xterm.js" ] && [ -f "$dest/addon-fit.js" ] && [ -f "$dest/xterm.css" ] \
     && [ -f "$NODE_ROOT/static/vendor/htmx/htmx.min.js" ] \
     && [ -f "$NODE_ROOT/node_modules/axe-core/axe.min.js" ]; then
    return 0
  fi
  ensure_npm || { echo "warning: npm is missing: the web terminal and live updates are unavailable (apt-get install npm)" >&2; return 1; }
  local modules="$NODE_ROOT/node_modules/@xterm"
  if [ ! -f "$modules/xterm/lib/xterm.js" ] || [ ! -f "$modules/addon-fit/lib/addon-fit.js" ] \
     || [ ! -f "$NODE_ROOT/node_modules/htmx.org/dist/htmx.min.js" ] \
     || [ ! -f "$NODE_ROOT/node_modules/axe-core/axe.min.js" ] \
     || [ "$NODE_ROOT/package-lock.json" -nt "$NODE_ROOT/node_modules/.package-lock.json" ]; then
    echo "==> installing the web UI's npm packages (xterm.js, htmx; axe-core for the accessibility tests)"
    (cd "$NODE_ROOT" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
      || { echo "warning: npm ci failed: the web terminal and live updates are unavailable" >&2; return 1; }
  fi
  mkdir -p "$dest"
  cp "$modules/xterm/lib/xterm.js" "$modules/xterm/css/xterm.css" "$modules/addon-fit/lib/addon-fit.js" "$dest/"
  cp "$modules/xterm/LICENSE" "$dest/LICENSE.xterm"
  [ -f "$modules/addon-fit/LICENSE" ] && cp "$modules/addon-fit/LICENSE" "$dest/LICENSE.addon-fit"
  # htmx drives the live page fragments (templates/sessions/_assets.html)
  mkdir -p "$NODE_ROOT/static/vendor/htmx"
  cp "$NODE_ROOT/node_modules/htmx.org/dist/htmx.min.js" "$NODE_ROOT/node_modules/htmx.org/LICENSE" \
     "$NODE_ROOT/static/vendor/htmx/"
  echo "$want" > "$dest/.installed"
}
