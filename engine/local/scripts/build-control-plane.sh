#!/usr/bin/env bash
# Build the local control-plane binaries from the Go module proxy into a versioned cache outside
# the repository. Only the binaries named are built, and a binary already in the cache is reused
# at once, so a command builds just what it needs:
#
#   build-control-plane.sh                        kube-apiserver etcd (what the demo needs)
#   build-control-plane.sh kube-apiserver etcd helm               (what the tests need)
#   build-control-plane.sh kube-controller-manager                 (controllers, when a test asks)
#
# Each step prints one line with its elapsed time and an estimate; the tools' own output goes to
# a log file, whose path and last lines are printed when a step fails. The bin directory is the
# last line on stdout.
#
# Env: MCSYNC_K8S_VERSION (default v1.36.3)  MCSYNC_ETCD_VERSION (default v3.6.16)
#      MCSYNC_HELM_VERSION (default v3.20.2) MCSYNC_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/mcsync)
#      MCSYNC_BUILD_VERBOSE=1 streams the tools' output as well.
set -euo pipefail

k8s_version=${MCSYNC_K8S_VERSION:-v1.36.3}
etcd_version=${MCSYNC_ETCD_VERSION:-v3.6.16}
helm_version=${MCSYNC_HELM_VERSION:-v3.20.2}
cache_root=${MCSYNC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mcsync}
out="$cache_root/control-plane/k8s-$k8s_version-etcd-$etcd_version"
bin="$out/bin"

wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=(kube-apiserver etcd)
for w in "${wanted[@]}"; do
  case "$w" in
    kube-apiserver | kube-controller-manager | etcd | helm) ;;
    *) echo "error: unknown binary '$w' (kube-apiserver, kube-controller-manager, etcd, helm)" >&2; exit 2 ;;
  esac
done

missing=()
for w in "${wanted[@]}"; do
  [[ -x "$bin/$w" ]] || missing+=("$w")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: building the local control plane needs Go (>= 1.26) on PATH; none was found." >&2
  echo "       Install Go, or point MCSYNC_K8S_BIN at a directory holding kube-apiserver and etcd." >&2
  exit 3
fi

mkdir -p "$bin" "$cache_root/logs"
logfile="$cache_root/logs/build-$(date -u +%Y%m%dT%H%M%SZ).log"
work=$(mktemp -d "$out/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
total_start=$SECONDS

# step "what" "estimate" cmd...: one line before, one after, the tool's output in the log file.
step() {
  local what=$1 estimate=$2
  shift 2
  local t0=$SECONDS
  printf '    %s (usually %s) ...\n' "$what" "$estimate" >&2
  echo "=== $what" >>"$logfile"
  # In the background and waited for, so that errexit holds inside the step (it is ignored in
  # a function whose status is tested).
  if [[ ${MCSYNC_BUILD_VERBOSE:-} == 1 ]]; then
    ("$@") > >(tee -a "$logfile" >&2) 2>&1 &
  else
    ("$@") >>"$logfile" 2>&1 &
  fi
  local rc=0
  wait $! || rc=$?
  if [[ $rc -ne 0 ]]; then
    printf '    %s FAILED after %d s (exit %d); the last lines of %s:\n' "$what" $((SECONDS - t0)) "$rc" "$logfile" >&2
    tail -n 25 "$logfile" | sed 's/^/      /' >&2
    exit "$rc"
  fi
  printf '    %s: done in %d s\n' "$what" $((SECONDS - t0)) >&2
}

minor_patch=${k8s_version#v1.}           # 36.3
staging_version="v0.$minor_patch"        # v0.36.3
minor=${minor_patch%%.*}

kube_module() {
  # A wrapper module that requires k8s.io/kubernetes and pins every staging module it requires
  # at the v0.0.0 placeholder to its published tag; it imports only the commands asked for.
  local gomod goline godebug
  gomod=$(cd "$work" && GOFLAGS= go mod download -json "k8s.io/kubernetes@$k8s_version" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
  [[ -f "$gomod" ]] || { echo "could not download k8s.io/kubernetes@$k8s_version from the Go module proxy"; return 4; }
  goline=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod" | head -1)
  godebug=$(sed -n 's/^godebug \(.*\)$/\1/p' "$gomod" | head -1)
  mapfile -t staging < <(sed -n 's/^\s*\(k8s\.io\/[a-z0-9-]*\) v0\.0\.0$/\1/p' "$gomod" | sort -u)
  mkdir -p "$work/kube" && cd "$work/kube"
  go mod init mcsync.local/kube-build
  go mod edit -go="$goline"
  [[ -z "$godebug" ]] || go mod edit -godebug="$godebug"
  go mod edit -require="k8s.io/kubernetes@$k8s_version"
  for m in "${staging[@]}"; do
    go mod edit -replace="$m=$m@$staging_version"
  done
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in "${kube_cmds[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'
  } >tools.go
  go mod tidy
}

kube_build() {
  local ldflags="-s -w" build_date pkgs=()
  build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  for c in "${kube_cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  mkdir -p "$work/out"
  cd "$work/kube"
  go build -p "$(nproc)" -trimpath -ldflags "$ldflags" -o "$work/out/" "${pkgs[@]}"
  "$work/out/kube-apiserver" --version 2>/dev/null || true
  for c in "${kube_cmds[@]}"; do mv "$work/out/$c" "$bin/$c"; done
}

etcd_module() {
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init mcsync.local/etcd-build
  go mod edit -require="go.etcd.io/etcd/server/v3@$etcd_version"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
  go mod tidy
}

etcd_build() {
  mkdir -p "$work/out"
  cd "$work/etcd"
  go build -trimpath -ldflags "-s -w" -o "$work/out/etcd" go.etcd.io/etcd/server/v3
  "$work/out/etcd" --version
  mv "$work/out/etcd" "$bin/etcd"
}

helm_build() {
  # helm renders the chart in deploy/helm for the tests; it installs from the proxy as it is.
  mkdir -p "$work/helm"
  GOBIN="$work/helm" GOFLAGS= go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$helm_version"
  mv "$work/helm/helm" "$bin/helm"
}

kube_cmds=()
for w in "${missing[@]}"; do
  [[ $w == kube-* ]] && kube_cmds+=("$w")
done

echo "==> building ${missing[*]} from the Go module proxy (once; the log is $logfile)" >&2
if [[ ${#kube_cmds[@]} -gt 0 ]]; then
  step "Kubernetes $k8s_version: resolving and downloading modules" "1-3 min cold" kube_module
  step "Kubernetes $k8s_version: compiling ${kube_cmds[*]}" "4-9 min cold on 2 cores" kube_build
fi
if [[ " ${missing[*]} " == *" etcd "* ]]; then
  step "etcd $etcd_version: downloading modules" "under 1 min" etcd_module
  step "etcd $etcd_version: compiling" "1-2 min cold" etcd_build
fi
if [[ " ${missing[*]} " == *" helm "* ]]; then
  step "helm $helm_version: downloading and compiling" "2-3 min cold" helm_build
fi
echo "==> built ${missing[*]} in $((SECONDS - total_start)) s into $bin" >&2
echo "$bin"
