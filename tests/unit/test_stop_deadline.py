"""One bound over a service's whole stop (issue 11, item 19)."""

import re
import threading
import time
from pathlib import Path

from common.settings import load_settings
from services.runtime import StopDeadline

ROOT = Path(__file__).resolve().parents[2]


def test_the_process_is_ended_the_stop_timeout_after_the_stop_request_and_not_before():
    stop, exits = threading.Event(), []
    exited = threading.Event()

    def exit_(code):
        exits.append((code, time.monotonic()))
        exited.set()

    StopDeadline(stop, 0.3, "test", exit=exit_).start()
    assert not exited.wait(0.5)  # no stop request: never
    requested = time.monotonic()
    stop.set()
    assert exited.wait(5)
    [(code, at)] = exits
    assert code == 0 and 0.3 <= at - requested < 1.5


def test_the_default_stop_timeout_fits_in_composes_grace_period():
    compose = (ROOT / "compose.yaml").read_text()
    anchor = compose.split("x-pwasync", 1)[1].split("\nservices:", 1)[0]
    [grace] = re.findall(r"stop_grace_period: (\d+)s", anchor)
    assert load_settings({}).stop_timeout_seconds + 3 <= int(grace)
