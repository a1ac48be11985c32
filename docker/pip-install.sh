#!/bin/sh
# `pip install` in the image's build stages with what the build was given in
# docker/build-extra/ (README, "Containers"): a CA bundle, a pip.conf naming another index.
set -eu
if [ -s /build-extra/ca.pem ]; then export PIP_CERT=/build-extra/ca.pem; fi
if [ -s /build-extra/pip.conf ]; then export PIP_CONFIG_FILE=/build-extra/pip.conf; fi
exec pip install --no-cache-dir --disable-pip-version-check --progress-bar off "$@"
