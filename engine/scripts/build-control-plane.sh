#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, etcd (and helm, for the chart tests) from the Go module proxy into a
# versioned cache outside the repository. A finished build is reused: the script exits at once
# when the binaries for the pinned versions are already there.
#
# Usage: engine/scripts/build-control-plane.sh            (prints the bin directory on its last line)
# Env:   MCSYNC_K8S_VERSION   (default v1.36.3)   MCSYNC_ETCD_VERSION (default v3.6.16)
#        MCSYNC_CACHE_DIR     (default ${XDG_CACHE_HOME:-~/.cache}/mcsync)
set -euo pipefail

k8s_version=${MCSYNC_K8S_VERSION:-v1.36.3}
etcd_version=${MCSYNC_ETCD_VERSION:-v3.6.16}
helm_version=${MCSYNC_HELM_VERSION:-v3.20.2}
cache_root=${MCSYNC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mcsync}
out="$cache_root/control-plane/k8s-$k8s_version-etcd-$etcd_version"
bin="$out/bin"

if [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/etcd" && -x "$bin/helm" && -f "$bin/.complete" ]]; then
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: building the local control plane needs Go (>= 1.26) on PATH; none was found." >&2
  echo "       Install Go, or point MCSYNC_K8S_BIN at a directory holding kube-apiserver and etcd." >&2
  exit 3
fi

log() { printf '[build-control-plane %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
start=$SECONDS
mkdir -p "$bin"
work=$(mktemp -d "$out/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

minor_patch=${k8s_version#v1.}           # 36.3
staging_version="v0.$minor_patch"        # v0.36.3
minor=${minor_patch%%.*}

build_kube() {
  log "resolving k8s.io/kubernetes@$k8s_version"
  gomod=$(cd "$work" && GOFLAGS= go mod download -json "k8s.io/kubernetes@$k8s_version" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
  [[ -f "$gomod" ]] || { echo "error: could not download k8s.io/kubernetes@$k8s_version from the Go module proxy" >&2; exit 4; }

  goline=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod" | head -1)
  godebug=$(sed -n 's/^godebug \(.*\)$/\1/p' "$gomod" | head -1)
  # Every staging module is required at the v0.0.0 placeholder; replace each with its published tag.
  mapfile -t staging < <(sed -n 's/^\s*\(k8s\.io\/[a-z0-9-]*\) v0\.0\.0$/\1/p' "$gomod" | sort -u)
  log "go $goline, ${#staging[@]} staging modules pinned to $staging_version"

  mkdir -p "$work/kube"
  cd "$work/kube"
  go mod init mcsync.local/kube-build >/dev/null 2>&1
  go mod edit -go="$goline"
  [[ -n "$godebug" ]] && go mod edit -godebug="$godebug"
  go mod edit -require="k8s.io/kubernetes@$k8s_version"
  for m in "${staging[@]}"; do
    go mod edit -replace="$m=$m@$staging_version"
  done
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
  log "go mod tidy (downloads a few hundred MB on a cold cache)"
  go mod tidy >&2
  build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  log "building kube-apiserver and kube-controller-manager (cold: 10-25 min on 2 cores)"
  go build -p "$(nproc)" -trimpath -ldflags "$ldflags" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager >&2
}

build_etcd() {
  mkdir -p "$work/etcd"
  cd "$work/etcd"
  go mod init mcsync.local/etcd-build >/dev/null 2>&1
  go mod edit -require="go.etcd.io/etcd/server/v3@$etcd_version"
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  go mod tidy >&2
  log "building etcd $etcd_version"
  go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3 >&2
}

build_helm() {
  # helm renders the chart in deploy/helm for the tests; it installs from the proxy as it is.
  log "building helm $helm_version"
  GOBIN="$bin" GOFLAGS= go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$helm_version" >&2
}

# Build only what is missing, so adding a tool does not rebuild Kubernetes.
[[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" ]] || build_kube
[[ -x "$bin/etcd" ]] || build_etcd
[[ -x "$bin/helm" ]] || build_helm

# Check the binaries run (read all their output: a closed pipe would kill them with SIGPIPE).
"$bin/kube-apiserver" --version >&2
etcd_version_out=$("$bin/etcd" --version)
echo "${etcd_version_out%%$'\n'*}" >&2
touch "$bin/.complete"
log "done in $((SECONDS - start)) s; binaries in $bin ($(du -sh "$bin" | cut -f1))"
echo "$bin"
