# Shared set-up for scripts/run, scripts/test and scripts/bench. Source it from the repo root.
# Idempotent: installs what is missing, creates what does not exist yet, keeps the rest.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SOFTHSM_MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

log() { printf '==> %s\n' "$*" >&2; }

# SoftHSM2 and OpenSC from Debian/Ubuntu packages when missing.
ensure_packages() {
  local missing=()
  command -v softhsm2-util >/dev/null 2>&1 && [ -f "$SOFTHSM_MODULE" ] || missing+=(softhsm2)
  command -v pkcs11-tool >/dev/null 2>&1 || missing+=(opensc)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  # The tests render the HTML audit report with headless Chromium, and build the
  # fault-injecting PKCS#11 module (tests/faulty-pkcs11) against p11-kit's pkcs11.h.
  if [ "${NEED_TEST_TOOLS:-}" = 1 ]; then
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v cc >/dev/null 2>&1 || missing+=(gcc)
    [ -f /usr/include/p11-kit-1/p11-kit/pkcs11.h ] || missing+=(libp11-kit-dev)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
}

# Writes softhsm/softhsm2.conf from the committed template and exports SOFTHSM2_CONF.
ensure_softhsm_conf() {
  mkdir -p softhsm/tokens
  sed "s|@TOKENDIR@|$ROOT/softhsm/tokens|" softhsm/softhsm2.conf.template > softhsm/softhsm2.conf
  export SOFTHSM2_CONF="$ROOT/softhsm/softhsm2.conf"
  remove_damaged_tokens
}

# A token directory whose token.object is empty was damaged (SoftHSM2 rewrites that file
# in place; a process killed at that moment leaves it empty). Nothing in it can be read.
remove_damaged_tokens() {
  local d
  for d in softhsm/tokens/*/; do
    if [ -f "$d/token.object" ] && [ ! -s "$d/token.object" ]; then
      log "removing damaged SoftHSM2 token directory $d"
      rm -rf "$d"
    fi
  done
}

token_exists() {
  softhsm2-util --show-slots 2>/dev/null | grep -q "Label:[[:space:]]*$1[[:space:]]*$"
}

# ensure_token LABEL PIN_DIR [fresh]: a SoftHSM2 token with a generated user PIN in
# PIN_DIR/hsm-user-pin (0600). With "fresh", an existing token is deleted first.
ensure_token() {
  local label=$1 dir=$2 fresh=${3:-}
  mkdir -p "$dir"
  chmod 700 "$dir"
  if [ "$fresh" = fresh ] && token_exists "$label"; then
    softhsm2-util --delete-token --token "$label" >/dev/null
  fi
  if token_exists "$label"; then
    if [ ! -s "$dir/hsm-user-pin" ]; then
      echo "token '$label' exists but $dir/hsm-user-pin is missing: delete the token with" >&2
      echo "  SOFTHSM2_CONF=$SOFTHSM2_CONF softhsm2-util --delete-token --token $label" >&2
      echo "and run this script again (keys in it are lost)." >&2
      exit 1
    fi
    return
  fi
  log "creating SoftHSM2 token '$label'"
  (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$dir/hsm-user-pin")
  (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$dir/hsm-so-pin")
  softhsm2-util --init-token --free --label "$label" \
    --so-pin "$(cat "$dir/hsm-so-pin")" --pin "$(cat "$dir/hsm-user-pin")" >/dev/null
}

# The development set-up of SPEC §2: packages, token tokenvault-dev, TLS certificates.
dev_setup() {
  ensure_packages
  ensure_softhsm_conf
  ensure_token tokenvault-dev data/dev
}
