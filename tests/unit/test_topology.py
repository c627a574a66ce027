from common.topology import DELIVERY_LIMIT, UNLIMITED, topology_for


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
    assert all(spec.arguments == {"x-queue-type": "quorum"} for spec in specs)


def test_only_the_queue_type_is_an_argument_when_our_policies_carry_the_settings():
    for spec in topology_for("acme").queue_specs():
        assert spec.declaration_arguments(settings_by_policy=True) == {"x-queue-type": "quorum"}


def test_work_queues_dead_letter_past_the_delivery_limit():
    topology = topology_for("acme")
    work = {spec.name: spec for spec in topology.queue_specs()}[topology.task_changes.name]
    assert work.settings["delivery-limit"] == DELIVERY_LIMIT
    assert work.settings["dead-letter-routing-key"] == topology.task_changes.dead_letter_queue
    assert work.bindings == ("acme.task.changed",)
    arguments = work.declaration_arguments(settings_by_policy=False)
    assert arguments["x-delivery-limit"] == DELIVERY_LIMIT
    assert arguments["x-dead-letter-strategy"] == "at-least-once"


def test_retry_tiers_expire_back_into_their_own_work_queue():
    topology = topology_for("acme")
    queue = topology.transfers
    specs = {spec.name: spec for spec in topology.queue_specs()}
    retry = specs[queue.retry_queue(10)]
    assert retry.settings["message-ttl"] == 10_000
    assert retry.settings["dead-letter-exchange"] == ""
    assert retry.settings["dead-letter-routing-key"] == queue.name


def test_one_policy_per_queue_matching_exactly_that_queue():
    topology = topology_for("acme-1")
    policies = {policy.name: policy for policy in topology.policies(4)}
    assert set(policies) == set(topology.queue_names())
    work = policies[topology.transfers.name]
    assert work.pattern == r"^pwasync\.acme-1\.transfer-succeeded$"
    specs = {spec.name: spec for spec in topology.queue_specs()}
    assert work.definition == specs[topology.transfers.name].settings


def test_dead_letter_queues_have_no_delivery_limit_on_either_major_version():
    topology = topology_for("acme")
    dead = topology.transfers.dead_letter_queue
    assert {p.name: p for p in topology.policies(4)}[dead].definition == {
        "delivery-limit": UNLIMITED  # RabbitMQ 4: -1 turns its default of 20 off
    }
    assert dead not in {p.name for p in topology.policies(3)}  # 3.x: none by default
    spec = {s.name: s for s in topology.queue_specs()}[dead]
    assert spec.declaration_arguments(settings_by_policy=False) == {"x-queue-type": "quorum"}


def test_sync_requests_are_not_namespaced_because_operators_publish_them():
    assert topology_for("acme").sync_requests.routing_key == "sync.requested"


def test_tier_for_picks_the_smallest_tier_that_covers_the_wait():
    queue = topology_for("x").task_changes
    assert queue.tier_for(0) == queue.retry_tiers[0]
    assert queue.tier_for(3) == 10
    assert queue.tier_for(10) == 10
    assert queue.tier_for(10_000) == queue.retry_tiers[-1]
