"""The writer's event loop: uvloop by default, the standard library's on request, and a
clear configuration error (not an ImportError deep in start-up) where uvloop is missing."""

import sys

import pytest
import uvloop

from common.errors import ConfigError
from common.settings import load_settings
from services.event_writer.service import _loop_factory


def test_uvloop_is_the_default():
    assert _loop_factory(load_settings({})) is uvloop.new_event_loop


def test_the_standard_librarys_loop_on_request():
    assert _loop_factory(load_settings({"PWASYNC_WRITER_EVENT_LOOP": "asyncio"})) is None


def test_a_missing_uvloop_says_what_to_set(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    with pytest.raises(ConfigError, match="PWASYNC_WRITER_EVENT_LOOP=asyncio"):
        _loop_factory(load_settings({}))
