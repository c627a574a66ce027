from common.topology import DELIVERY_LIMIT, topology_for


def test_every_work_queue_has_a_dead_letter_queue_and_retry_tiers():
    topology = topology_for("acme")
    names = topology.queue_names()
    for queue in topology.work_queues.values():
        assert queue.dead_letter_queue in names
        for tier in queue.retry_tiers:
            assert queue.retry_queue(tier) in names
    assert len(names) == len(set(names))


def test_queues_are_namespaced_by_scenario_and_quorum():
    specs = topology_for("acme").queue_specs()
    assert all(spec.name.startswith("pwasync.acme.") for spec in specs)
    assert all(spec.arguments["x-queue-type"] == "quorum" for spec in specs)


def test_work_queues_dead_letter_past_the_delivery_limit():
    topology = topology_for("acme")
    work = {spec.name: spec for spec in topology.queue_specs()}[topology.task_changes.name]
    assert work.arguments["x-delivery-limit"] == DELIVERY_LIMIT
    assert work.arguments["x-dead-letter-routing-key"] == topology.task_changes.dead_letter_queue
    assert work.bindings == ("acme.task.changed",)


def test_retry_tiers_expire_back_into_their_own_work_queue():
    topology = topology_for("acme")
    queue = topology.transfers
    specs = {spec.name: spec for spec in topology.queue_specs()}
    retry = specs[queue.retry_queue(10)]
    assert retry.arguments["x-message-ttl"] == 10_000
    assert retry.arguments["x-dead-letter-exchange"] == ""
    assert retry.arguments["x-dead-letter-routing-key"] == queue.name


def test_sync_requests_are_not_namespaced_because_operators_publish_them():
    assert topology_for("acme").sync_requests.routing_key == "sync.requested"


def test_tier_for_picks_the_smallest_tier_that_covers_the_wait():
    queue = topology_for("x").task_changes
    assert queue.tier_for(0) == queue.retry_tiers[0]
    assert queue.tier_for(3) == 10
    assert queue.tier_for(10) == 10
    assert queue.tier_for(10_000) == queue.retry_tiers[-1]
