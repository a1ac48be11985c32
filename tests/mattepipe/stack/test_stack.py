"""The supervised stack: the generated config as Supervisor itself reads it, and a real
supervisord restarting a killed program and stopping every child on SIGTERM / Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from supervisor.options import ServerOptions

from mattepipe.stack import (
    INTERNAL_TOKEN_FILE,
    Program,
    StackError,
    health_urls,
    render_config,
    repo_root,
    run_stack,
    stack_programs,
    start_stack,
    stop_stack,
    supervisor_bin,
    wait_healthy,
    with_internal_token,
    write_config,
)
from shared.settings import Settings
from tests.support.servers import free_port
from tests.support.waiting import wait_for

NASTY = "50% off, a=b; 'single' x#y \\back\\slash"


def options(conf: Path) -> ServerOptions:
    """The config exactly as supervisord reads it."""
    opts = ServerOptions()
    opts.realize(args=["-c", str(conf)])
    return opts


def parsed(conf: Path) -> dict[str, object]:
    opts = options(conf)
    return {pc.name: pc for g in opts.process_group_configs for pc in g.process_configs}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); its state in /proc says it is gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def test_config_lists_every_service_with_its_environment(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "data", matting_workers=3, comparison_workers=2,
                 api_key="top-secret", gpu_memory_fraction=0.2)
    conf = write_config(s, tmp_path / "sv.conf")
    procs = parsed(conf)
    assert set(procs) == {"gateway", "matting-api", "comparison-api", "matting-worker-1",
                          "matting-worker-2", "matting-worker-3", "comparison-worker-1",
                          "comparison-worker-2"}
    mw3 = procs["matting-worker-3"]
    assert mw3.command.split()[1:] == [  # type: ignore[attr-defined]
        "-m", "matting_worker", "--port", "9003", "--worker-id", "matting-worker-3",
        "--host", "127.0.0.1"]
    env = mw3.environment  # type: ignore[attr-defined]
    assert env["WORKER_ID"] == "matting-worker-3"
    assert env["PUBLIC_URL"] == "http://127.0.0.1:9003"
    assert env["DATA_DIR"] == str((tmp_path / "data").resolve())
    assert env["GPU_MEMORY_FRACTION"] == "0.2"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(repo_root())
    api = procs["matting-api"].environment  # type: ignore[attr-defined]
    assert api["WORKER_URLS"] == ",".join(f"http://127.0.0.1:{p}" for p in (9001, 9002, 9003))
    assert procs["comparison-api"].environment["WORKER_URLS"] == (  # type: ignore[attr-defined]
        "http://127.0.0.1:9101,http://127.0.0.1:9102")
    gw = procs["gateway"].environment  # type: ignore[attr-defined]
    assert gw["MATTING_API_URL"] == "http://127.0.0.1:8001"
    assert gw["COMPARISON_API_URL"] == "http://127.0.0.1:8002"
    for pc in procs.values():
        assert pc.autorestart and pc.stopasgroup and pc.killasgroup  # type: ignore[attr-defined]
        assert pc.stopsignal == signal.SIGTERM  # type: ignore[attr-defined]
        assert pc.stdout_logfile == str(  # type: ignore[attr-defined]
            (tmp_path / "data" / "logs" / f"{pc.name}.out").resolve())  # type: ignore[attr-defined]
        assert pc.directory == str(repo_root())  # type: ignore[attr-defined]
    # workers start before the balancers, the gateway last
    prio = {n: pc.priority for n, pc in procs.items()}  # type: ignore[attr-defined]
    assert prio["matting-worker-1"] < prio["matting-api"] < prio["gateway"]
    assert "top-secret" not in conf.read_text()
    assert len(health_urls(s)) == 8


def test_awkward_values_survive_supervisors_parser(tmp_path: Path) -> None:
    data = tmp_path / "da ta%dir"
    s = Settings(data_dir=data, log_level=NASTY)
    conf = write_config(s, tmp_path / "sv.conf")
    gateway = parsed(conf)["gateway"]
    assert gateway.environment["LOG_LEVEL"] == NASTY  # type: ignore[attr-defined]
    assert gateway.environment["DATA_DIR"] == str(data.resolve())  # type: ignore[attr-defined]
    logs = data.resolve() / "logs"
    assert gateway.stdout_logfile == str(logs / "gateway.out")  # type: ignore[attr-defined]
    opts = options(conf)
    assert (opts.logfile, opts.pidfile, opts.childlogdir) == (
        str(logs / "supervisord.log"), str(logs / "supervisord.pid"), str(logs))
    assert opts.server_configs[0]["file"] == str(data.resolve() / "supervisor.sock")


@pytest.mark.parametrize("bad", ['both \' and "', "'quoted'", "cut ;here", "cut #here",
                                 "two\nlines"])
def test_values_supervisor_cannot_carry_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(StackError):
        render_config(Settings(data_dir=tmp_path, log_level=bad))


def test_socket_path_stays_short_for_a_deep_data_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    text = render_config(Settings(data_dir=deep))
    sock = next(line for line in text.splitlines() if line.startswith("file="))[5:]
    assert len(sock) <= 100 and sock.startswith("/tmp/")
    assert render_config(Settings(data_dir=deep)) == text  # stable: supervisorctl finds it


def test_workers_follow_the_settings(tmp_path: Path) -> None:
    progs = stack_programs(Settings(data_dir=tmp_path, matting_workers=1, comparison_workers=0,
                                    matting_worker_port=9501))
    assert [p.name for p in progs] == ["matting-worker-1", "matting-api", "comparison-api",
                                       "gateway"]
    assert progs[0].port == 9501 and progs[0].env["PUBLIC_URL"] == "http://127.0.0.1:9501"


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        said: list[str] = []
        rc = run_stack(Settings(data_dir=tmp_path, gateway_port=port), echo=said.append)
    assert rc == 2
    assert f"port {port} (gateway) is taken" in said[0]


ENV_DUMP = ("import json, os, sys, time; t = sys.argv[1] + '.tmp'; "
            "json.dump(dict(os.environ), open(t, 'w')); os.replace(t, sys.argv[1]); "
            "time.sleep(600)")


@pytest.fixture
def small_stack(tmp_path: Path) -> Iterator[tuple[Settings, list[Program], Path]]:
    """supervisord with two stand-in programs: a real HTTP server and an environment dump."""
    port = free_port()
    dump = tmp_path / "env.json"
    s = Settings(data_dir=tmp_path / "data", api_key="s3cret", log_level=NASTY)
    progs = [
        Program("web", (sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"),
                {"WORKER_ID": "web-1"}, port, health_path="/"),
        Program("envdump", (sys.executable, "-c", ENV_DUMP, str(dump)), {"WORKER_ID": "dump-1"}),
    ]
    yield s, progs, dump


def supervisorctl(conf: Path, *args: str) -> str:
    return subprocess.run([supervisor_bin("supervisorctl"), "-c", str(conf), *args],
                          capture_output=True, text=True, timeout=30).stdout.strip()


def test_supervisord_restarts_a_killed_program_and_stops_all(
        small_stack: tuple[Settings, list[Program], Path]) -> None:
    s, progs, dump = small_stack
    conf = s.data_dir.resolve() / "supervisord.conf"
    proc = start_stack(s, progs, conf)
    try:
        wait_healthy(health_urls(s, progs), 60)
        wait_for(dump.exists)
        env = json.loads(dump.read_text())
        assert env["WORKER_ID"] == "dump-1" and env["LOG_LEVEL"] == NASTY
        assert env["API_KEY"] == "s3cret"  # inherited from supervisord, not from the file
        assert "s3cret" not in conf.read_text()

        first = int(supervisorctl(conf, "pid", "web"))
        dump_pid = int(supervisorctl(conf, "pid", "envdump"))
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: supervisorctl(conf, "pid", "web") not in ("", "0", str(first)))
        second = int(supervisorctl(conf, "pid", "web"))
        wait_healthy([f"http://127.0.0.1:{progs[0].port}/"], 60)
        wait_for(lambda: "RUNNING" in supervisorctl(conf, "status", "web"))
        assert not alive(first)
    finally:
        rc = stop_stack(proc)
    assert rc == 0
    assert not alive(second) and not alive(dump_pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{progs[0].port}/", timeout=2)
    assert (s.data_dir / "logs" / "web.out").exists()


def test_internal_services_bind_to_internal_host(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, host="0.0.0.0", matting_workers=1, comparison_workers=1)
    progs = {p.name: p for p in stack_programs(s)}
    for name in ("matting-worker-1", "comparison-worker-1", "matting-api", "comparison-api"):
        argv = list(progs[name].argv)
        assert progs[name].internal and argv[argv.index("--host") + 1] == "127.0.0.1", name
    assert "--host" not in progs["gateway"].argv and not progs["gateway"].internal
    assert all(u.startswith("http://127.0.0.1:") for u in health_urls(s))


def test_the_internal_token_is_generated_and_handed_over_by_environment_only(
        small_stack: tuple[Settings, list[Program], Path]) -> None:
    s, progs, dump = small_stack
    assert s.internal_token is None
    data = s.data_dir.resolve()
    conf = data / "supervisord.conf"
    proc = start_stack(s, progs, conf)
    try:
        wait_for(dump.exists)
        env = json.loads(dump.read_text())
    finally:
        stop_stack(proc)
    token_file = data / INTERNAL_TOKEN_FILE
    token = token_file.read_text().strip()
    assert len(token) >= 32 and token_file.stat().st_mode & 0o777 == 0o600
    assert env["INTERNAL_TOKEN"] == token  # inherited from supervisord
    assert token not in conf.read_text()
    for log in (data / "logs").iterdir():
        assert token not in log.read_text(errors="replace"), log
    # the next start of the same DATA_DIR keeps it; a token that is set wins
    assert with_internal_token(s).internal_token == token
    set_one = s.model_copy(update={"internal_token": "from-env"})
    assert with_internal_token(set_one).internal_token == "from-env"
    assert "from-env" not in render_config(set_one, progs)


def test_ctrl_c_stops_the_foreground_stack(
        small_stack: tuple[Settings, list[Program], Path], tmp_path: Path) -> None:
    s, progs, _ = small_stack
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from shared.settings import Settings
        from mattepipe.stack import Program, run_stack
        progs = [Program(n, tuple(a), e, p, health_path=h) for n, a, e, p, h in {[
            (p.name, list(p.argv), dict(p.env), p.port, p.health_path) for p in progs]!r}]
        sys.exit(run_stack(Settings(data_dir=Path({str(s.data_dir)!r})), 60, programs=progs))
    """)
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    log = tmp_path / "fg.out"
    with log.open("w") as out:
        fg = subprocess.Popen([sys.executable, "-c", script], cwd=repo_root(), env=env,
                              stdout=out, stderr=subprocess.STDOUT)
    try:
        # the banner comes once every program answers its health URL
        wait_for(lambda: "Ctrl-C stops it" in log.read_text(), 60)
        pid = int(supervisorctl(s.data_dir.resolve() / "supervisord.conf", "pid", "envdump"))
        fg.send_signal(signal.SIGINT)
        fg.wait(60)
    finally:
        if fg.poll() is None:
            fg.kill()
    assert fg.returncode == 0, log.read_text()
    assert not alive(pid)
    assert "stopped: envdump" in log.read_text()
