"""A stored event id that Graph no longer knows (the item was archived, re-imported, or its id
was stored in the regular form before a move): the event is looked up by its task key before
the writer creates another (a duplicate) or forgets it (an orphan)."""

from datetime import timedelta

from tests.unit.test_writer_handler import A_BOX, ASSIGNEES, B_BOX, BOB, NOW, TASK, World, task


def change_id(world, mailbox, resource_id):
    """What Exchange does to the item's id when it moves; the item itself stays."""
    old = world.store.maps[TASK][resource_id].event_id
    box = world.graph.events[mailbox]
    new = f"{old}-moved"
    box[new] = {**box.pop(old), "id": new}
    return new


def test_an_update_finds_the_moved_event_by_its_task_key_and_creates_none():
    world = World()
    world.handle(task(ASSIGNEES))
    moved = change_id(world, B_BOX, BOB)
    world.handle(task(ASSIGNEES, task_name="renamed", revision=NOW + timedelta(hours=1)))
    [event] = world.events(B_BOX)
    assert (event["id"], event["subject"]) == (moved, "renamed")
    assert world.store.maps[TASK][BOB].event_id == moved


def test_an_assignee_leaving_deletes_the_moved_event_it_finds_by_its_task_key():
    world = World()
    world.handle(task(ASSIGNEES))
    change_id(world, B_BOX, BOB)
    without_bob = [a for a in ASSIGNEES if a.resource_id != BOB]
    world.handle(task(without_bob, revision=NOW + timedelta(hours=1)))
    assert world.events(B_BOX) == []
    assert BOB not in world.store.maps[TASK]


def test_a_removal_deletes_moved_events_it_finds_by_their_task_key():
    world = World()
    world.handle(task(ASSIGNEES))
    change_id(world, A_BOX, next(iter(world.store.maps[TASK])))
    change_id(world, B_BOX, BOB)
    world.handle(task(ASSIGNEES, change="remove", revision=NOW + timedelta(hours=1)))
    assert world.events() == []


def test_an_event_really_gone_is_written_again_or_forgotten_as_before():
    world = World()
    world.handle(task(ASSIGNEES))
    world.graph.events[B_BOX].clear()  # the owner deleted it
    world.handle(task(ASSIGNEES, task_name="renamed", revision=NOW + timedelta(hours=1)))
    [event] = world.events(B_BOX)
    assert event["subject"] == "renamed"
    world.graph.events[B_BOX].clear()
    without_bob = [a for a in ASSIGNEES if a.resource_id != BOB]
    world.handle(task(without_bob, revision=NOW + timedelta(hours=2)))
    assert BOB not in world.store.maps[TASK]
