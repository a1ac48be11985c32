"""The test servers' port picking (`tests.support.servers.free_ports`)."""

from __future__ import annotations

import socket

from tests.support.servers import free_ports


def test_runs_of_free_ports_share_no_port_and_are_all_free() -> None:
    """Five runs (a stack's three servers and two runs of workers) many times over: no port
    is handed out twice and every port of every run can be bound afterwards."""
    for _ in range(200):
        runs = (1, 1, 1, 3, 2)
        firsts = free_ports(*runs)
        ports = [first + k for first, n in zip(firsts, runs, strict=True) for k in range(n)]
        assert len(set(ports)) == len(ports) == sum(runs)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
