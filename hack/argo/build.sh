#!/usr/bin/env bash
# Build Argo Workflows' workflow-controller and argoexec from the Go module proxy.
#
# Why: bench/cluster_peer.py runs Argo as a *benchmark peer* next to Stagecoach on
# the same test control plane (tests/cluster) and node agent. Only Go/Debian/PyPI
# registries are reachable, so, like hack/cluster/build.sh, we compile the two main
# packages from the wrapper module next to this script, which pins
# github.com/argoproj/argo-workflows/v3. The binaries are a loopback-only test peer:
# they are never shipped, packaged or put in an image.
#
# Binaries go to a cache OUTSIDE the repo, keyed by the Argo version:
#   ${STAGECOACH_ARGO_BIN_DIR:-${STAGECOACH_CACHE:-$HOME/.cache/stagecoach}/argo-bin/<version>}
# and are rebuilt only when missing. Concurrent callers serialise on a flock.
# The module's manifests that the bench applies are copied next to them:
#   manifests/crds/{minimal,full}/         (manifests/base/crds)
#   manifests/namespace-install/*.yaml     (the controller's namespaced Role)
#
# Usage:
#   hack/argo/build.sh            build if needed, print the bin dir on stdout
#   hack/argo/build.sh --bin-dir  only print the bin dir (no build)
#   hack/argo/build.sh --force    rebuild even if the binaries exist
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -x /usr/local/go/bin/go ]] && ! command -v go >/dev/null 2>&1; then
  export PATH="/usr/local/go/bin:$PATH"
fi

module=github.com/argoproj/argo-workflows/v3
argo_version="$(awk -v m="$module" '$1 == m && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")"
cache_root="${STAGECOACH_CACHE:-$HOME/.cache/stagecoach}"
bin_dir="${STAGECOACH_ARGO_BIN_DIR:-$cache_root/argo-bin/${argo_version}}"
bins=(workflow-controller argoexec)

mode="build"
case "${1:-}" in
  --bin-dir) echo "$bin_dir"; exit 0 ;;
  --force) mode="force" ;;
  "") ;;
  *) echo "usage: $0 [--bin-dir|--force]" >&2; exit 2 ;;
esac

log() { echo "[argo-bins] $*" >&2; }

bins_complete() {
  local b
  for b in "${bins[@]}"; do
    [[ -x "$bin_dir/$b" ]] || return 1
  done
}
manifests_complete() {
  [[ -f "$bin_dir/manifests/crds/minimal/kustomization.yaml" &&
     -f "$bin_dir/manifests/namespace-install/workflow-controller-role.yaml" ]]
}
complete() { bins_complete && manifests_complete; }

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

# Version stamping as Argo's Makefile does; without a git checkout the commit field
# records the module checksum, which identifies the exact source that was compiled.
info="$(cd "$here" && go mod download -json "$module@$argo_version")"
argo_sum="$(awk -F'"' '$2 == "Sum" {print $4}' <<<"$info")"
argo_dir="$(awk -F'"' '$2 == "Dir" {print $4}' <<<"$info")"
argo_time="$(awk -F'"' '$2 == "Info" {print $4}' <<<"$info" | xargs cat \
  | sed -n 's/.*"Time":"\([^"]*\)".*/\1/p')"
pkg=github.com/argoproj/argo-workflows/v3
ldflags="-s -w -X $pkg.version=$argo_version -X $pkg.gitTag=$argo_version"
ldflags+=" -X $pkg.gitCommit=module-$argo_sum -X $pkg.gitTreeState=clean"
ldflags+=" -X $pkg.buildDate=${argo_time:-1970-01-01T00:00:00Z}"

# Upstream's workflow/executor/osspecific/signal_linux.go is a symlink to
# signal_darwin.go. Module zips carry no symlinks, so every served release lacks the
# file and `go build .../cmd/argoexec` fails with "undefined: Setpgid"
# (command_unix.go); overlays may not touch GOMODCACHE. So when the file is missing we
# build from a throw-away copy of the module source with the symlink put back,
# selected by a replace in a generated -modfile (the committed go.mod is untouched).
modfile_args=()
osspecific="workflow/executor/osspecific"
if [[ ! -e "$argo_dir/$osspecific/signal_linux.go" && -f "$argo_dir/$osspecific/signal_darwin.go" ]]
then
  log "module zip lacks the $osspecific/signal_linux.go symlink: restoring it in a copy"
  cp -r "$argo_dir" "$stage/src"
  chmod -R u+w "$stage/src"
  ln -s signal_darwin.go "$stage/src/$osspecific/signal_linux.go"
  cp "$here/go.mod" "$stage/build.mod"
  cp "$here/go.sum" "$stage/build.sum"
  echo "replace $module => $stage/src" >>"$stage/build.mod"
  modfile_args=(-modfile "$stage/build.mod")
fi

if [[ "$mode" == force ]] || ! bins_complete; then
  start=$SECONDS
  log "building $module $argo_version (${bins[*]}) into $bin_dir"
  (
    cd "$here"
    go build -mod=readonly -buildvcs=false -trimpath -p "$jobs" -ldflags "$ldflags" \
      "${modfile_args[@]}" -o "$stage/" "$module/cmd/workflow-controller" "$module/cmd/argoexec"
  )
  log "argo binaries built in $((SECONDS - start))s"
  for b in "${bins[@]}"; do
    mv -f "$stage/$b" "$bin_dir/$b"
  done
fi

mkdir -p "$stage/manifests/namespace-install"
cp -r "$argo_dir/manifests/base/crds" "$stage/manifests/crds"
cp "$argo_dir"/manifests/namespace-install/workflow-controller-rbac/*.yaml \
  "$stage/manifests/namespace-install/"
chmod -R u+w "$stage/manifests"
rm -rf "$bin_dir/manifests"
mv "$stage/manifests" "$bin_dir/manifests"
"$bin_dir/workflow-controller" version 2>/dev/null | head -1 >&2 || true
echo "$bin_dir"
