import gc

import pytest

from common.garbage_collection import YOUNG_THRESHOLD, pace_for_service


@pytest.fixture
def restored_collector():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_a_service_collects_its_young_objects_less_often_and_keeps_the_older_pace(
    restored_collector,
):
    _, middle, oldest = gc.get_threshold()
    pace_for_service()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, oldest)


def test_what_the_service_made_at_startup_is_out_of_the_collectors_sight(restored_collector):
    gc.unfreeze()
    made_at_startup = [[] for _ in range(3)]
    assert any(o is made_at_startup[0] for o in gc.get_objects())
    pace_for_service()
    tracked = {id(o) for o in gc.get_objects()}  # every generation the collector traces
    assert not tracked & {id(o) for o in made_at_startup}


def test_cycles_made_after_startup_are_still_collected(restored_collector):
    pace_for_service()

    class Node:
        pass

    node = Node()
    node.self = node
    del node
    assert gc.collect() > 0
