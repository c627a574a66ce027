"""Which ack frames settle a batch of deliveries: the consumer's coalescing (nothing is ever
requeued, so acks are the only frames)."""

from hypothesis import given
from hypothesis import strategies as st

from common.consumer import SettlementFrame, settlement_frames


def test_a_settled_prefix_goes_as_one_multiple_ack():
    frames = settlement_frames([1, 2, 3, 4], {1, 2, 3})
    assert frames == [SettlementFrame(3, multiple=True)]


def test_acks_after_a_delivery_still_in_a_handler_go_one_by_one_and_do_not_wait():
    frames = settlement_frames([1, 2, 3, 4, 5], {1, 3, 5})
    assert frames == [SettlementFrame(1), SettlementFrame(3), SettlementFrame(5)]


@st.composite
def batches(draw):
    unsettled = sorted(draw(st.sets(st.integers(1, 40), min_size=1)))
    return unsettled, draw(st.sets(st.sampled_from(unsettled)))


@given(batches())
def test_the_frames_ack_exactly_the_settled_deliveries_as_the_broker_applies_them(batch):
    unsettled, acked = batch
    outstanding = {tag: None for tag in unsettled}  # what the broker holds for this channel
    settled = set()
    for frame in settlement_frames(unsettled, acked):
        covered = (
            [tag for tag in outstanding if tag <= frame.delivery_tag]
            if frame.multiple
            else [frame.delivery_tag]
        )
        for tag in covered:
            assert tag in outstanding, "a frame names a delivery the broker no longer holds"
            del outstanding[tag]
            settled.add(tag)
    assert settled == acked
