import gzip
import logging
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shared.logs import (
    DEBUG_LOGGER,
    SizedTimedRotatingFileHandler,
    add_request_logging,
    safe,
    setup_logging,
)
from shared.settings import Settings
from tests.support.servers import ThreadServer


def test_size_rollover_gzips_and_keeps_every_roll(tmp_path: Path) -> None:
    h = SizedTimedRotatingFileHandler(tmp_path / "svc.log", max_bytes=300, backup_count=50)
    h.setFormatter(logging.Formatter("%(message)s"))
    lg = logging.getLogger("test.rotation")
    lg.propagate = False
    lg.addHandler(h)
    try:
        for i in range(40):
            lg.warning("line %03d %s", i, "x" * 40)
    finally:
        lg.removeHandler(h)
        h.close()
    rolled = sorted(tmp_path.glob("svc.log.*.gz"))
    assert len(rolled) >= 5  # several rolls within one second did not overwrite each other
    text = "".join(gzip.decompress(p.read_bytes()).decode() for p in rolled)
    text += (tmp_path / "svc.log").read_text()
    assert all(f"line {i:03d}" in text for i in range(40))
    assert (tmp_path / "svc.log").stat().st_size < 300


def test_backup_count_drops_the_oldest(tmp_path: Path) -> None:
    h = SizedTimedRotatingFileHandler(tmp_path / "svc.log", max_bytes=100, backup_count=3)
    lg = logging.getLogger("test.rotation.count")
    lg.propagate = False
    lg.addHandler(h)
    try:
        for i in range(30):
            lg.warning("%s", "y" * 60 + str(i))
    finally:
        lg.removeHandler(h)
        h.close()
    assert len(list(tmp_path.glob("svc.log.*.gz"))) == 3


def test_setup_logging_splits_main_and_debug(tmp_path: Path) -> None:
    setup_logging("svc", Settings(data_dir=tmp_path))
    setup_logging("svc", Settings(data_dir=tmp_path))  # idempotent: no doubled lines
    logging.getLogger("mattepipe.test").info("hello main")
    logging.getLogger(DEBUG_LOGGER).debug("queue depth 3")
    for h in logging.getLogger().handlers + logging.getLogger(DEBUG_LOGGER).handlers:
        h.flush()
    for lg in (logging.getLogger(), logging.getLogger(DEBUG_LOGGER)):  # leave pytest's alone
        for h in [h for h in lg.handlers if getattr(h, "_mattepipe_handler", False)]:
            lg.removeHandler(h)
            h.close()
    main = (tmp_path / "logs/svc.log").read_text()
    debug = (tmp_path / "logs/svc_debug.log").read_text()
    assert main.count("hello main") == 1 and "queue depth" not in main
    assert "queue depth 3" in debug


def _drop_our_handlers() -> None:
    for lg in (logging.getLogger(), logging.getLogger(DEBUG_LOGGER)):  # leave pytest's alone
        for h in [h for h in lg.handlers if getattr(h, "_mattepipe_handler", False)]:
            lg.removeHandler(h)
            h.close()


def test_safe_escapes_control_characters_only() -> None:
    assert safe("a\nb\r\tc\x1b[31m\u2028\x85") == "a\\nb\\r\\tc\\x1b[31m\\u2028\\x85"
    assert safe("photos/été 1.png") == "photos/été 1.png"


def test_a_decoded_newline_in_a_url_cannot_forge_a_log_line(tmp_path: Path) -> None:
    app = Starlette(routes=[Route("/status/{job}", lambda _r: PlainTextResponse("x"))])
    add_request_logging(app, "svc")
    setup_logging("svc", Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
    try:
        with ThreadServer(app) as srv:
            r = httpx.get(srv.url + "/status/a%0Aforged%0D%0A2030-01-01 00:00:00 INFO evil")
            assert r.status_code == 200
        # Any other record carrying user text is one line too, whoever logs it.
        logging.getLogger("gateway.intake").info("member %s", "x\n2030-01-01 INFO fake")
        for h in logging.getLogger().handlers:
            h.flush()
    finally:
        _drop_our_handlers()
    lines = (tmp_path / "logs/svc.log").read_text().splitlines()
    forged = [line for line in lines if "forged" in line or "evil" in line]
    assert len(forged) == 1, lines
    assert "/status/a\\nforged\\r\\n2030-01-01 00:00:00 INFO evil 200" in forged[0]
    assert not any(line.startswith("2030") for line in lines)
    member = [line for line in lines if "member" in line]
    assert len(member) == 1 and member[0].endswith("member x\\n2030-01-01 INFO fake")
