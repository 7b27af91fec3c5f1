# Shared helpers for the local service scripts. Sourced, never run.
# Every script is idempotent: `up` finds what is already there and reuses it.

set -euo pipefail

OPS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$OPS_DIR/.." && pwd)"
STATE_DIR="${TE_STATE_DIR:-$REPO_DIR/.state}"
mkdir -p "$STATE_DIR"

log() { printf '[%s] %s\n' "${SERVICE:-ops}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Run as root directly, otherwise through sudo when it exists.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED_MARK="$STATE_DIR/.apt-updated"

# Install Debian packages that are missing; `apt-get update` at most once a day.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ ! -f "$APT_UPDATED_MARK" ] || [ -n "$(find "$APT_UPDATED_MARK" -mmin +1440)" ]; then
    as_root apt-get update -q >/dev/null
    touch "$APT_UPDATED_MARK"
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# tcp_open HOST PORT: true when something accepts connections there.
tcp_open() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: poll COMMAND until it succeeds.
wait_for() {
  local what="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    [ $SECONDS -ge $deadline ] && die "$what not ready after ${timeout}s"
    sleep 0.5
  done
  log "$what ready"
}
