import gzip
import logging
from pathlib import Path

from shared.logs import DEBUG_LOGGER, SizedTimedRotatingFileHandler, setup_logging
from shared.settings import Settings


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
