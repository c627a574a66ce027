"""Which ack and reject frames settle a batch of deliveries: the consumer's coalescing."""

from hypothesis import given
from hypothesis import strategies as st

from common.consumer import SettlementFrame, settlement_frames


def test_a_settled_prefix_goes_as_one_multiple_ack():
    frames = settlement_frames([1, 2, 3, 4], {1: True, 2: True, 3: True})
    assert frames == [SettlementFrame(3, ack=True, multiple=True)]


def test_acks_after_a_delivery_still_in_a_handler_go_one_by_one_and_do_not_wait():
    frames = settlement_frames([1, 2, 3, 4, 5], {1: True, 3: True, 5: True})
    assert frames == [
        SettlementFrame(1, ack=True),
        SettlementFrame(3, ack=True),
        SettlementFrame(5, ack=True),
    ]


def test_rejections_go_first_so_a_multiple_ack_never_covers_them():
    frames = settlement_frames([1, 2, 3], {1: True, 2: False, 3: True})
    assert frames == [
        SettlementFrame(2, ack=False),
        SettlementFrame(3, ack=True, multiple=True),
    ]


@st.composite
def batches(draw):
    unsettled = sorted(draw(st.sets(st.integers(1, 40), min_size=1)))
    settled_tags = draw(st.sets(st.sampled_from(unsettled)))
    return unsettled, {tag: draw(st.booleans()) for tag in settled_tags}


@given(batches())
def test_the_frames_settle_exactly_the_settled_deliveries_as_the_broker_applies_them(batch):
    unsettled, settled = batch
    outstanding = {tag: None for tag in unsettled}  # what the broker holds for this channel
    outcome = {}
    for frame in settlement_frames(unsettled, settled):
        covered = (
            [tag for tag in outstanding if tag <= frame.delivery_tag]
            if frame.multiple
            else [frame.delivery_tag]
        )
        for tag in covered:
            assert tag in outstanding, "a frame names a delivery the broker no longer holds"
            del outstanding[tag]
            outcome[tag] = frame.ack
    assert outcome == settled
