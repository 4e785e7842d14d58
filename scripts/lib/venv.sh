# Shared by scripts/run and scripts/test: make sure the project's virtualenv
# under the checkout exists and holds the dependencies of pyproject.toml.
# Usage: ensure_venv [extras]   (e.g. ensure_venv test)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

ensure_venv() {
  local extras="${1:-}" spec="." stamp want
  [ -n "$extras" ] && spec=".[$extras]"
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)-$extras"
  stamp="$VENV/.installed"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && grep -qx -- "$want" "$stamp" 2>/dev/null; then
    return 0
  fi
  # a stamp for a superset of extras also satisfies a plain install
  if [ -z "$extras" ] && [ -f "$stamp" ] && grep -q "^$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)-" "$stamp"; then
    return 0
  fi
  local python
  python="$(find_python)" || return 1
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv in $VENV"
    "$python" -m venv "$VENV"
  fi
  echo "==> installing dependencies ($spec)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  (cd "$ROOT" && "$VENV/bin/python" -m pip install --quiet -e "$spec")
  echo "$want" > "$stamp"
}
