"""The async consumer's acks: a quiet consumer acks at the end of the turn, a busy one at
most every ACK_PACE_SECONDS, so acks that would go one frame each go as one ``multiple``."""

import asyncio

from common.async_consumer import _Acks


class RecordingChannel:
    def __init__(self) -> None:
        self.frames: list[tuple[float, int, bool]] = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.frames.append((asyncio.get_running_loop().time(), delivery_tag, multiple))


def test_a_quiet_consumer_acks_at_the_end_of_the_turn():
    async def scenario():
        channel = RecordingChannel()
        acks = _Acks(channel, pace_seconds=10.0)
        acks.unsettled.update(dict.fromkeys([1, 2]))
        started = asyncio.get_running_loop().time()
        acks.ack(2)
        await acks.sent()
        return channel.frames, started, acks.unsettled

    frames, started, unsettled = asyncio.run(scenario())
    assert [(tag, multiple) for _, tag, multiple in frames] == [(2, False)]
    assert frames[0][0] - started < 1.0  # not held for the pace
    assert list(unsettled) == [1]


def test_a_busy_consumer_gathers_the_acks_of_its_pace_into_one_multiple_ack():
    async def scenario():
        channel = RecordingChannel()
        acks = _Acks(channel, pace_seconds=0.05)
        acks.unsettled.update(dict.fromkeys([1, 2, 3, 4]))
        acks.ack(2)  # 1 is still in a handling: 2 goes alone
        await acks.sent()
        acks.ack(3)
        await asyncio.sleep(0.01)  # later turns within the pace
        acks.ack(1)
        await acks.sent()
        return channel.frames, acks.unsettled

    frames, unsettled = asyncio.run(scenario())
    assert [(tag, multiple) for _, tag, multiple in frames] == [(2, False), (3, True)]
    assert frames[1][0] - frames[0][0] >= 0.045  # the second flush waited for the pace
    assert list(unsettled) == [4]
