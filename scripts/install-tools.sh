#!/usr/bin/env bash
# Install the tools Dockyard's tests use. Idempotent: a second run only checks
# what is there and prints the versions.
#
#   DOCKYARD_TOOLS   where Go-built tools go (default ~/.cache/dockyard-tools);
#                    binaries land in $DOCKYARD_TOOLS/bin.
#
# Needs root (or sudo) for apt, and `go` (>= 1.24) for the Go-built clients.
set -euo pipefail

TOOLS="${DOCKYARD_TOOLS:-$HOME/.cache/dockyard-tools}"
BIN="$TOOLS/bin"
STAMPS="$TOOLS/stamps"

# Pinned versions. The conformance suite's v1.1.1 tag commit (a139cc4) is not
# served by the Go module proxy reachable here; the Ginkgo suite below is the
# newest one it serves (2023-11-01, between v1.1.0-rc3 and -rc4; same env vars).
# The "next" suite is the redesigned (unreleased) one from the spec's main branch.
CRANE_VERSION=v0.22.1        # github.com/google/go-containerregistry
ORAS_VERSION=v1.3.6          # oras.land/oras
REGCTL_VERSION=v0.11.7       # github.com/regclient/regclient
HELM_VERSION=v3.22.0         # helm.sh/helm/v3 (OCI charts: helm registry login/push/pull)
COSIGN_VERSION=v3.1.3        # github.com/sigstore/cosign/v3 (signatures: tag and bundle/referrers layouts)
PEBBLE_VERSION=v2.10.3       # github.com/letsencrypt/pebble/v2 (a test ACME server: tests/e2e/test_acme_pebble.py)
CONFORMANCE_MODULE=github.com/opencontainers/distribution-spec/conformance
CONFORMANCE_VERSION=v0.0.0-20231101194043-f2182352d4cc
CONFORMANCE_NEXT_VERSION=v0.0.0-20260831232431-97274622c111

APT_PACKAGES=(
  ca-certificates curl jq
  skopeo podman umoci uidmap fuse-overlayfs
  debootstrap postgresql docker-registry redis-server
  wrk hey hyperfine
)

log() { printf '[install-tools] %s\n' "$*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

# --- apt ----------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != installed ]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  # Keep package scripts from starting services (docker-registry would listen
  # on :5000 on all interfaces); tests start their own on 127.0.0.1.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    trap '"${SUDO[@]}" rm -f "$policy"' EXIT
  fi
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Nor at boot: Debian's docker-registry unit serves on *:5000.
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null; then
    "${SUDO[@]}" systemctl disable --quiet docker-registry.service 2>/dev/null || true
  fi
  log "  apt: ${SECONDS}s"
fi

# --- Go-built tools -------------------------------------------------------------
mkdir -p "$BIN" "$STAMPS"
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi

# have NAME VERSION: the binary exists and was built from VERSION.
have() { [ -x "$BIN/$1" ] && [ "$(cat "$STAMPS/$1" 2>/dev/null)" = "$2" ]; }
stamp() { printf '%s\n' "$2" >"$STAMPS/$1"; }

need_go() {
  command -v go >/dev/null || { log "error: 'go' not found (need Go >= 1.24)"; exit 1; }
}

go_install() { # NAME PACKAGE VERSION
  local name=$1 pkg=$2 version=$3
  have "$name" "$pkg@$version" && return 0
  need_go
  log "go install $pkg@$version"
  local t0=$SECONDS
  GOBIN="$BIN" GOFLAGS="${GOFLAGS:-} -trimpath" go install "$pkg@$version"
  stamp "$name" "$pkg@$version"
  log "  $name: $((SECONDS - t0))s"
}

# build_conformance NAME VERSION GO-ARGS...: copy the module out of the
# (read-only) module cache and build it there.
build_conformance() {
  local name=$1 version=$2; shift 2
  have "$name" "$CONFORMANCE_MODULE@$version" && return 0
  need_go
  log "building $name from $CONFORMANCE_MODULE@$version"
  local dir src t0=$SECONDS
  dir=$(go mod download -json "$CONFORMANCE_MODULE@$version" | jq -r .Dir)
  src=$(mktemp -d)
  cp -r "$dir/." "$src/"
  chmod -R u+w "$src"
  (cd "$src" && GOFLAGS="${GOFLAGS:-} -mod=mod -trimpath" go "$@" -o "$BIN/$name" .)
  rm -rf "$src"
  stamp "$name" "$CONFORMANCE_MODULE@$version"
  log "  $name: $((SECONDS - t0))s"
}

go_install crane github.com/google/go-containerregistry/cmd/crane "$CRANE_VERSION"
go_install oras oras.land/oras/cmd/oras "$ORAS_VERSION"
go_install regctl github.com/regclient/regclient/cmd/regctl "$REGCTL_VERSION"
go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
go_install cosign github.com/sigstore/cosign/v3/cmd/cosign "$COSIGN_VERSION"
go_install pebble github.com/letsencrypt/pebble/v2/cmd/pebble "$PEBBLE_VERSION"
build_conformance oci-conformance.test "$CONFORMANCE_VERSION" test -c
build_conformance oci-conformance-next "$CONFORMANCE_NEXT_VERSION" build

# --- summary --------------------------------------------------------------------
{
  echo "== tools (Go-built in $BIN)"
  for n in crane oras regctl helm cosign pebble oci-conformance.test oci-conformance-next; do
    printf '  %-22s %s\n' "$n" "$(cat "$STAMPS/$n")"
  done
  echo "== apt packages"
  dpkg-query -W -f='  ${Package;-22} ${Version}\n' "${APT_PACKAGES[@]}"
  echo "== PostgreSQL server: $(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n1)"
} >&2
