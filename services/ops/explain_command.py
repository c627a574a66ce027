"""``pwasync explain TASK [--json]``: the readers of every place, wired to ``explain.gather``.

Exit 0 when the story is whole; 1 when the task is not found, the name matches several tasks,
or a place could not be read (the story says which, and tells the rest).
"""

from __future__ import annotations

import json

from common.errors import PwasyncError
from common.http import new_http_client
from common.mailboxes import MailboxPolicy
from common.rabbit import RabbitConnector
from common.redis_store import Keys, connect_redis_for
from common.settings import Settings
from common.topology import topology_for
from services.event_writer.task_store import TaskReports
from services.ledger.endpoints import EndpointLedger
from services.ops.dead_letters import DeadLetterBox
from services.ops.explain import Readers, gather, look_up
from services.ops.explain_lookup import Located
from services.ops.explain_render import lookup_json, render_lookup, render_story
from services.ops.plans import open_plans
from services.poller.state import PollerState


def run_explain(settings: Settings, query: str, *, as_json: bool) -> int:
    url = settings.redis_url.get_secret_value()
    client = connect_redis_for(settings)
    keys = Keys(settings.scenario)
    box = DeadLetterBox(
        RabbitConnector(settings.amqp_url.get_secret_value(), connection_name="pwasync-cli"),
        topology_for(settings.scenario),
    )
    try:
        with new_http_client(
            ca_bundle=settings.ca_bundle, timeout=settings.http_timeout_seconds
        ) as http:
            readers = Readers(
                feed=None,
                poller=PollerState(client, keys, url),
                task_store=TaskReports(client, keys, url),
                ledger=EndpointLedger(client, keys, url),
                dead_letters=box.list,
                mailboxes=MailboxPolicy.from_settings(settings),
                zone=settings.pwa_zone,
                flag=_flag(settings),
            )
            try:
                opened = open_plans(settings, http, client)
                readers.feed, readers.task_link = opened.feed, opened.task_link
            except PwasyncError as exc:
                readers.feed_error = str(exc)
            lookup = look_up(query, readers)
            if not isinstance(lookup, Located):
                print(json.dumps(lookup_json(lookup)) if as_json else render_lookup(lookup))
                return 1
            story = gather(lookup, readers)
    finally:
        client.close()
    print(json.dumps(story) if as_json else render_story(story))
    return 1 if story["unreadable"] else 0


def _flag(settings: Settings) -> str:
    """What selects a task, as the sync reads it (PWASYNC_SELECT_BY)."""
    if settings.selection == "label":
        return f"label {settings.create_event_label!r}"
    return f"flag field {settings.create_event_field!r}"
