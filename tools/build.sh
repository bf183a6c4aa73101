#!/usr/bin/env bash
# Builds the programs the integration tests run, from the pinned Go wrapper modules beside this
# script: the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
# kubectl in one binary) and helm. Each build is kept under $LIFELONG_CACHE keyed by a hash of
# its module files, so a second run is a link step, and a changed pin rebuilds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${LIFELONG_CACHE:-$HOME/.cache/lifelong}
bin=$cache/bin
mkdir -p "$bin" "$cache/build"

if ! command -v go >/dev/null; then
  echo "tools/build.sh: Go is needed to build the test control plane; install Go 1.26 or later" >&2
  exit 1
fi

# The pin is read from go.mod, where it sits either alone or inside a `require (...)` block.
k8s_version=$(sed -n 's/^\(require\)\{0,1\}[[:space:]]*k8s.io\/kubernetes \(v[0-9.]*\)$/\2/p' \
  "$here/controlplane/go.mod")
if [ -z "$k8s_version" ]; then
  echo "tools/build.sh: cannot read the k8s.io/kubernetes version from controlplane/go.mod" >&2
  exit 1
fi
k8s_minor=$(echo "$k8s_version" | cut -d. -f2)
version_flags="-X k8s.io/component-base/version.gitVersion=$k8s_version \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$k8s_minor \
  -X k8s.io/component-base/version.gitTreeState=clean \
  -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version \
  -X k8s.io/client-go/pkg/version.gitMajor=1 \
  -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"

# build NAME DIR PACKAGE LDFLAGS: print the path of the binary, building it if needed.
build() {
  local name=$1 dir=$2 package=$3 ldflags=$4 key out
  key=$( (cat "$dir"/go.mod "$dir"/go.sum "$dir"/*.go 2>/dev/null; echo "$ldflags") \
    | sha256sum | cut -c1-16)
  out=$cache/build/$name-$key
  if [ ! -x "$out" ]; then
    echo "tools/build.sh: building $name ($key); a first build takes several minutes" >&2
    (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" \
      "$package")
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

controlplane=$(build controlplane "$here/controlplane" . "$version_flags")
for program in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  ln -sfn "$controlplane" "$bin/$program"
done
helm=$(build helm "$here/helm" helm.sh/helm/v4/cmd/helm "")
ln -sfn "$helm" "$bin/helm"
echo "tools/build.sh: control plane $k8s_version and helm ready in $bin" >&2
