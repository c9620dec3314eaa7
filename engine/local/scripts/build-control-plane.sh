#!/usr/bin/env bash
# Build the local control-plane binaries from the Go module proxy into a versioned cache outside
# the repository. Only the binaries named are built, and a binary already in the cache is reused
# at once, so a command builds just what it needs:
#
#   build-control-plane.sh                        kube-apiserver etcd (what the demo needs)
#   build-control-plane.sh kube-apiserver etcd helm               (what the tests need)
#   build-control-plane.sh kube-controller-manager                 (controllers, when a test asks)
#   build-control-plane.sh kubelet kube-proxy kube-scheduler cni-plugins coredns node-rootfs
#                                                                                  (local nodes)
#   build-control-plane.sh mcsync-image                  (mcsync's image, for its chart on nodes)
#
# The node parts that are not Kubernetes commands have versions of their own, so they live beside
# the versioned bin directory rather than in it: cni-plugins (bridge, host-local, loopback,
# portmap) in node/cni-plugins-<version>/, coredns in node/coredns-<version>/, and node-rootfs (a
# Debian root filesystem made by mmdebstrap, the one layer of the test images) as
# node/rootfs-<suite>-<hash of its package list>.tar. mcsync-image is mcsync's own image made
# the Dockerfile's way, without docker, in two layers like the Dockerfile's: a Debian root
# filesystem with python3 (3.11, as the Dockerfile's python:3.11 base) in which
# deploy/image/install.sh, the script the Dockerfile runs, installs the dependencies with
# chroot (node/mcsync-base-<suite>-<hash>.tar, by the hash of the package list, the lock,
# pyproject.toml, README.md and the install script), and the files that the script's second
# phase adds to it when it installs mcsync itself from this checkout's sources
# (node/mcsync-layer-<suite>-<hash>.tar, by the hash of all that and the package sources).
# A change to the sources makes a new layer only. `build-control-plane.sh --mcsync-image-path`
# prints both paths and builds nothing.
#
# Each step prints one line with its elapsed time and an estimate; the tools' own output goes to
# a log file, whose path and last lines are printed when a step fails. The bin directory is the
# last line on stdout.
#
# Env: MCSYNC_K8S_VERSION (default v1.36.3)  MCSYNC_ETCD_VERSION (default v3.6.16)
#      MCSYNC_HELM_VERSION (default v3.20.2) MCSYNC_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/mcsync)
#      MCSYNC_CNI_VERSION (default v1.10.0)  MCSYNC_COREDNS_VERSION (default v1.15.0)
#      MCSYNC_BUILD_VERBOSE=1 streams the tools' output as well.
set -euo pipefail

k8s_version=${MCSYNC_K8S_VERSION:-v1.36.3}
etcd_version=${MCSYNC_ETCD_VERSION:-v3.6.16}
helm_version=${MCSYNC_HELM_VERSION:-v3.20.2}
cache_root=${MCSYNC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mcsync}
out="$cache_root/control-plane/k8s-$k8s_version-etcd-$etcd_version"
bin="$out/bin"
cni_version=${MCSYNC_CNI_VERSION:-v1.10.0}
coredns_version=${MCSYNC_COREDNS_VERSION:-v1.15.0}
node_dir="$cache_root/node"
cni_dir="$node_dir/cni-plugins-$cni_version"
coredns_dir="$node_dir/coredns-$coredns_version"
cni_plugins=(bridge host-local loopback portmap)
# The test images' packages: a shell, nc, nslookup and dig, socat, ip, ps, curl. Keep in step
# with ROOTFS_PACKAGES in engine/local/images.py, which names the tar by the same hash.
rootfs_suite=bookworm
rootfs_packages=socat,netcat-openbsd,dnsutils,iproute2,procps,curl,ca-certificates
rootfs_hash=$(printf '%s %s' "$rootfs_suite" "$rootfs_packages" | sha256sum | cut -c1-12)
rootfs_tar="$node_dir/rootfs-$rootfs_suite-$rootfs_hash.tar"
# mcsync's image: keep image_packages and the hash's inputs in step with MCSYNC_IMAGE_PACKAGES
# and mcsync_image_inputs() in engine/local/images.py, which finds the tar by the same hash.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
image_packages=python3,python3-venv,ca-certificates,passwd
base_inputs=(pyproject.toml uv.lock README.md deploy/image/install.sh)
image_inputs=("${base_inputs[@]}" engine publishers subscribers deploy/crds)
image_hash() {
  # sha256 of "<suite> <packages>\n" followed by `sha256sum` lines of every input file (of the
  # paths given), sorted.
  {
    printf '%s %s\n' "$rootfs_suite" "$image_packages"
    (cd "$repo" && find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
      | LC_ALL=C sort | xargs -d '\n' sha256sum)
  } | sha256sum | cut -c1-12
}
image_base="$node_dir/mcsync-base-$rootfs_suite-$(image_hash "${base_inputs[@]}").tar"
image_layer="$node_dir/mcsync-layer-$rootfs_suite-$(image_hash "${image_inputs[@]}").tar"
if [[ ${1:-} == --mcsync-image-path ]]; then
  echo "$image_base"
  echo "$image_layer"
  exit 0
fi

wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=(kube-apiserver etcd)
for w in "${wanted[@]}"; do
  case "$w" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy | etcd | helm) ;;
    cni-plugins | coredns | node-rootfs | mcsync-image) ;;
    *) echo "error: unknown part '$w' (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, etcd, helm, cni-plugins, coredns, node-rootfs, mcsync-image)" >&2; exit 2 ;;
  esac
done

missing=()
built() {
  case "$1" in
    cni-plugins) for p in "${cni_plugins[@]}"; do [[ -x "$cni_dir/$p" ]] || return 1; done ;;
    coredns) [[ -x "$coredns_dir/coredns" ]] ;;
    node-rootfs) [[ -s "$rootfs_tar" ]] ;;
    mcsync-image) [[ -s "$image_base" && -s "$image_layer" ]] ;;
    *) [[ -x "$bin/$1" ]] ;;
  esac
}
for w in "${wanted[@]}"; do
  built "$w" || missing+=("$w")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "$bin"
  exit 0
fi

needs_go=0
needs_mmdebstrap=0
for w in "${missing[@]}"; do
  case "$w" in
    node-rootfs | mcsync-image) needs_mmdebstrap=1 ;;
    *) needs_go=1 ;;
  esac
done
if [[ $needs_mmdebstrap == 1 ]] && ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "error: the node root filesystem and mcsync's image are made with mmdebstrap (Debian package mmdebstrap); none was found." >&2
  exit 3
fi
if [[ " ${missing[*]} " == *" mcsync-image "* ]] && { [[ $(id -u) -ne 0 ]] || [[ ! -f "$repo/uv.lock" ]]; }; then
  echo "error: mcsync's image is built as root (chroot) from a checkout of the repository (uv.lock at $repo)." >&2
  exit 3
fi
if [[ $needs_go == 1 ]] && ! command -v go >/dev/null 2>&1; then
  echo "error: building the local control plane needs Go (>= 1.26) on PATH; none was found." >&2
  echo "       Install Go, or point MCSYNC_K8S_BIN at a directory holding kube-apiserver and etcd." >&2
  exit 3
fi

mkdir -p "$bin" "$node_dir" "$cache_root/logs"
logfile="$cache_root/logs/build-$(date -u +%Y%m%dT%H%M%SZ).log"
work=$(mktemp -d "$out/work.XXXXXX")
trap 'rm -rf --one-file-system "$work"' EXIT
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

cni_build() {
  # One go install of the four plugins at one version: the module has no replace directives.
  local pkgs=()
  for p in "${cni_plugins[@]}"; do
    case "$p" in
      bridge) pkgs+=("github.com/containernetworking/plugins/plugins/main/bridge@$cni_version") ;;
      loopback) pkgs+=("github.com/containernetworking/plugins/plugins/main/loopback@$cni_version") ;;
      host-local) pkgs+=("github.com/containernetworking/plugins/plugins/ipam/host-local@$cni_version") ;;
      portmap) pkgs+=("github.com/containernetworking/plugins/plugins/meta/portmap@$cni_version") ;;
    esac
  done
  mkdir -p "$work/cni"
  GOBIN="$work/cni" GOFLAGS= go install -trimpath -ldflags "-s -w" "${pkgs[@]}"
  rm -rf "$cni_dir.tmp" && mkdir -p "$cni_dir.tmp"
  mv "$work/cni/"* "$cni_dir.tmp/"
  rm -rf "$cni_dir" && mv "$cni_dir.tmp" "$cni_dir"
}

coredns_build() {
  # CoreDNS from its own module, with only the plugins a node's Corefile uses (errors, health,
  # ready, kubernetes with its multicluster option, loadbalance): a main of our own that imports
  # them and sets the directive order, CoreDNS's documented way to choose plugins at compile
  # time. The full plugin list pulls in every cloud SDK and takes minutes more to compile.
  local goline gomod
  gomod=$(cd "$work" && GOFLAGS= go mod download -json "github.com/coredns/coredns@$coredns_version" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
  [[ -f "$gomod" ]] || { echo "could not download github.com/coredns/coredns@$coredns_version"; return 4; }
  goline=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod" | head -1)
  mkdir -p "$work/coredns/src" && cd "$work/coredns/src"
  go mod init mcsync.local/coredns-build
  go mod edit -go="$goline" -require="github.com/coredns/coredns@$coredns_version"
  cat >main.go <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The order of CoreDNS's plugin.cfg, restricted to the plugins imported above.
func init() {
	dnsserver.Directives = []string{"ready", "health", "errors", "loadbalance", "kubernetes"}
}

func main() { coremain.Run() }
GO
  go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$work/coredns/coredns" .
  local plugins
  plugins=$("$work/coredns/coredns" -plugins)
  grep -qx 'kubernetes' <<<"$plugins" || { echo "coredns $coredns_version lacks the kubernetes plugin"; return 5; }
  mkdir -p "$coredns_dir"
  mv "$work/coredns/coredns" "$coredns_dir/coredns"
}

rootfs_build() {
  # A minimal Debian with the packages the test images need, as one tar (the image's one layer).
  mmdebstrap --variant=minbase --include="$rootfs_packages" \
    --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    "$rootfs_suite" "$work/rootfs.tar" http://deb.debian.org/debian
  mv "$work/rootfs.tar" "$rootfs_tar"
}

# The install script runs with a clean environment, trusting the CA bundle the building machine
# trusts (SSL_CERT_FILE, else Debian's bundle: a TLS-inspecting proxy's CA included), which is
# removed afterwards.
image_env=(PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
  SSL_CERT_FILE=/tmp/build-ca.crt PIP_CERT=/tmp/build-ca.crt)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [[ -z ${!v:-} ]] || image_env+=("$v=${!v}")
done
build_ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}

image_sources() {
  # The files of the given inputs (no bytecode) copied to $1, as the Dockerfile's COPY does.
  local dest=$1
  shift
  mkdir -p "$dest"
  (cd "$repo" && find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
    | tar --null -T - -cf -) | tar -C "$dest" -xf -
}

image_base_build() {
  # The Dockerfile's first RUN in a Debian root: the dependencies from the lock, and the user.
  # mmdebstrap mounts /proc, /dev and /sys for its hooks and gives the root the host's
  # resolv.conf while it builds; uv fetches the wheels from PyPI.
  local src="$work/base-src"
  image_sources "$src" "${base_inputs[@]}"
  mmdebstrap --variant=minbase --include="$image_packages" \
    --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="cp -a '$src' \"\$1/src\" && cp '$build_ca' \"\$1/tmp/build-ca.crt\"" \
    --customize-hook="chroot \"\$1\" env -i ${image_env[*]} sh -c 'cd /src && sh deploy/image/install.sh deps'" \
    --customize-hook='rm -rf "$1/src" "$1/tmp/build-ca.crt" "$1/root/.cache" "$1/var/lib/apt/lists"/* "$1/var/cache/apt"/*.bin' \
    "$rootfs_suite" "$work/mcsync-base.tar" http://deb.debian.org/debian
  mv "$work/mcsync-base.tar" "$image_base"
}

image_listing() {
  # Every entry of the root but the mounted and scratch directories, with what changes when
  # it is written (inode, size, mtime, mode), sorted.
  (cd "$1" && find . \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./tmp -o -path ./src \) \
    -prune -o -printf '%p\t%i %s %T@ %m %U %G\n' | LC_ALL=C sort)
}

image_layer_build() {
  # The Dockerfile's second RUN: the base unpacked, the sources copied in, the script's project
  # phase run with chroot (/proc and /dev mounted, the host's resolv.conf while it runs),
  # then the entries it added or changed, as a tar: the image's second layer.
  local root="$work/image-root" rc=0
  mkdir -p "$root"
  tar -C "$root" -xpf "$image_base"
  image_listing "$root" >"$work/before"
  image_sources "$root/src" "${image_inputs[@]}"
  cp "$build_ca" "$root/tmp/build-ca.crt"
  [[ ! -e "$root/etc/resolv.conf" && ! -L "$root/etc/resolv.conf" ]] || mv "$root/etc/resolv.conf" "$work/resolv.conf.image"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  # The mounts in a mount namespace of the chroot's own: they go when it ends, however it ends.
  unshare --mount --propagation private -- bash -c '
    root=$1; shift
    mount -t proc proc "$root/proc" && mount --bind /dev "$root/dev" &&
      exec chroot "$root" env -i "$@" sh -c "cd /src && sh deploy/image/install.sh project"
  ' _ "$root" "${image_env[@]}" || rc=$?
  rm -f "$root/etc/resolv.conf"
  [[ ! -e "$work/resolv.conf.image" && ! -L "$work/resolv.conf.image" ]] || mv "$work/resolv.conf.image" "$root/etc/resolv.conf"
  [[ $rc -eq 0 ]] || return "$rc"
  image_listing "$root" >"$work/after"
  # Removed entries would need whiteouts; the project phase only adds.
  if [[ -n $(comm -23 <(cut -f1 "$work/before") <(cut -f1 "$work/after")) ]]; then
    echo "the project phase removed files from the base:"
    comm -23 <(cut -f1 "$work/before") <(cut -f1 "$work/after") | head
    return 6
  fi
  comm -13 "$work/before" "$work/after" | cut -f1 >"$work/changed"
  tar -C "$root" --no-recursion -cf "$work/mcsync-layer.tar" -T "$work/changed"
  echo "the layer holds $(wc -l <"$work/changed") entries"
  mv "$work/mcsync-layer.tar" "$image_layer"
}

kube_cmds=()
for w in "${missing[@]}"; do
  [[ $w == kube* ]] && kube_cmds+=("$w")
done

echo "==> building ${missing[*]} (once; the log is $logfile)" >&2
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
if [[ " ${missing[*]} " == *" cni-plugins "* ]]; then
  step "CNI plugins $cni_version (${cni_plugins[*]}): downloading and compiling" "1-2 min cold" cni_build
fi
if [[ " ${missing[*]} " == *" coredns "* ]]; then
  step "CoreDNS $coredns_version (the node's plugins): downloading and compiling" "1-3 min cold" coredns_build
fi
if [[ " ${missing[*]} " == *" node-rootfs "* ]]; then
  step "node root filesystem (Debian $rootfs_suite, mmdebstrap)" "1-3 min" rootfs_build
fi
if [[ " ${missing[*]} " == *" mcsync-image "* ]]; then
  if [[ ! -s "$image_base" ]]; then
    step "mcsync image, its base (Debian $rootfs_suite, mmdebstrap, install.sh deps)" "2-3 min" image_base_build
  fi
  step "mcsync image, mcsync itself (install.sh project)" "under 1 min" image_layer_build
fi
echo "==> built ${missing[*]} in $((SECONDS - total_start)) s into $bin" >&2
echo "$bin"
