#!/usr/bin/env bash
# Fills docker/build-extra/ (see its README) from this machine, for `make images`:
#   ca.pem        the CA bundle this machine's pip trusts (PIP_CERT, pip's `cert`, or
#                 SSL_CERT_FILE), so pip in the build trusts the same proxy;
#   wheels-cpu/   torch's CPU wheel when this machine's pip finds it in a local folder
#                 (PIP_FIND_LINKS or pip's `find-links`), so the build needs no PyTorch index.
# Files are replaced only when they differ, so the image layers after them stay cached.
#   docker/build-extra.sh TORCH_VERSION
set -euo pipefail
torch=${1:?usage: build-extra.sh TORCH_VERSION}
dir=$(cd "$(dirname "$0")" && pwd)/build-extra
mkdir -p "$dir/wheels-cpu" "$dir/wheels-cuda"

put() {  # put SOURCE DEST: copy when the content differs
  cmp -s "$1" "$2" 2>/dev/null || cp "$1" "$2"
}
pip_config() { python3 -m pip config get "global.$1" 2>/dev/null || true; }

ca=${PIP_CERT:-$(pip_config cert)}
ca=${ca:-${SSL_CERT_FILE:-}}
if [ -n "$ca" ] && [ -f "$ca" ]; then
  put "$ca" "$dir/ca.pem"
else
  rm -f "$dir/ca.pem"
fi

for links in ${PIP_FIND_LINKS:-} $(pip_config find-links); do
  [ -d "$links" ] || continue
  for wheel in "$links"/torch-"$torch"+cpu-*.whl; do
    [ -f "$wheel" ] && put "$wheel" "$dir/wheels-cpu/$(basename "$wheel")"
  done
done
ls -la "$dir" "$dir/wheels-cpu"
