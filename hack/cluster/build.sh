#!/usr/bin/env bash
# Build the test control plane from the official Go modules.
#
# Why: the cluster tests (tests/cluster) need a real kube-apiserver, controller
# manager, scheduler, etcd and a kubectl of the same release, and this machine
# (and CI) may only reach Go/Debian/PyPI registries. So we compile them from the
# wrapper modules next to this script:
#   kube/  pins k8s.io/kubernetes (+ its staging modules) -> kube-apiserver,
#          kube-controller-manager, kube-scheduler, kubectl
#   etcd/  pins go.etcd.io/etcd/server/v3 (3.6)          -> etcd
#
# Binaries go to a cache OUTSIDE the repo, keyed by both versions:
#   ${STAGECOACH_KUBE_BIN_DIR:-${STAGECOACH_CACHE:-$HOME/.cache/stagecoach}/kube-bin/<kube>-etcd<etcd>}
# and are rebuilt only when missing. Concurrent callers serialise on a flock.
#
# Usage:
#   hack/cluster/build.sh            build if needed, print the bin dir on stdout
#   hack/cluster/build.sh --bin-dir  only print the bin dir (no build)
#   hack/cluster/build.sh --force    rebuild even if the binaries exist
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -x /usr/local/go/bin/go ]] && ! command -v go >/dev/null 2>&1; then
  export PATH="/usr/local/go/bin:$PATH"
fi

kube_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/kube/go.mod")"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' \
  "$here/etcd/go.mod")"
cache_root="${STAGECOACH_CACHE:-$HOME/.cache/stagecoach}"
bin_dir="${STAGECOACH_KUBE_BIN_DIR:-$cache_root/kube-bin/${kube_version}-etcd${etcd_version}}"
kube_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

mode="build"
case "${1:-}" in
  --bin-dir) echo "$bin_dir"; exit 0 ;;
  --force) mode="force" ;;
  "") ;;
  *) echo "usage: $0 [--bin-dir|--force]" >&2; exit 2 ;;
esac

log() { echo "[cluster-bins] $*" >&2; }

complete() {
  local b
  for b in "${kube_bins[@]}" etcd; do
    [[ -x "$bin_dir/$b" ]] || return 1
  done
}

if [[ "$mode" == build ]] && complete; then
  echo "$bin_dir"
  exit 0
fi

command -v go >/dev/null 2>&1 || { log "go toolchain not found (need Go >= 1.26)"; exit 1; }
mkdir -p "$bin_dir"
exec 9>"$bin_dir/.build.lock"
flock 9
# Another process may have finished the build while we waited for the lock.
if [[ "$mode" == build ]] && complete; then
  echo "$bin_dir"
  exit 0
fi

export CGO_ENABLED=0
jobs="${STAGECOACH_BUILD_JOBS:-2}"
stage="$(mktemp -d "$bin_dir/.stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# Version stamping: there is no git checkout, so the commit field records the
# module checksum, which identifies the exact source that was compiled.
kube_sum="$(cd "$here/kube" && go mod download -json "k8s.io/kubernetes@$kube_version" \
  | awk -F'"' '$2 == "Sum" {print $4}')"
kube_time="$(cd "$here/kube" && go mod download -json "k8s.io/kubernetes@$kube_version" \
  | awk -F'"' '$2 == "Info" {print $4}' | xargs cat | sed -n 's/.*"Time":"\([^"]*\)".*/\1/p')"
ver="${kube_version#v}"
major="${ver%%.*}"
minor="${ver#*.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitCommit=module-$kube_sum -X $pkg.gitTreeState=clean"
  ldflags+=" -X $pkg.buildDate=${kube_time:-1970-01-01T00:00:00Z}"
done

start=$SECONDS
log "building k8s.io/kubernetes $kube_version (${kube_bins[*]}) into $bin_dir"
(
  cd "$here/kube"
  go build -mod=readonly -buildvcs=false -trimpath -p "$jobs" -ldflags "$ldflags" -o "$stage/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
)
log "kube binaries built in $((SECONDS - start))s"

start=$SECONDS
log "building go.etcd.io/etcd/server/v3 $etcd_version"
etcd_sum="$(cd "$here/etcd" && go mod download -json "go.etcd.io/etcd/server/v3@$etcd_version" \
  | awk -F'"' '$2 == "Sum" {print $4}')"
(
  cd "$here/etcd"
  go build -mod=readonly -buildvcs=false -trimpath -p "$jobs" \
    -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$etcd_sum" \
    -o "$stage/etcd" go.etcd.io/etcd/server/v3
)
log "etcd built in $((SECONDS - start))s"

for b in "${kube_bins[@]}" etcd; do
  mv -f "$stage/$b" "$bin_dir/$b"
done
"$bin_dir/kube-apiserver" --version >&2
"$bin_dir/etcd" --version | sed -n 1p >&2  # sed reads it all: no SIGPIPE under pipefail
echo "$bin_dir"
