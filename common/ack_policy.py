"""The ack policy: what happens to a delivery once its handler has returned or raised.

One pure function, so the rule is in one place and tested without a broker:

- the handler returned: **ack** (the work and its bookkeeping are done, including any message the
  handler published, which the broker has confirmed);
- it raised a ``PermanentError`` (bad input, a 4xx that repeating cannot fix): **dead-letter**
  with the reason;
- it raised ``Contended`` (another worker holds the same work): **retry** once the holder's
  lease may have ended, without counting an attempt;
- it raised a ``RetryableError``, or an unexpected exception (a bug is treated as transient
  until the attempts run out, so a fix and a restart recover the work): **retry** after a delay
  that grows with the attempt and honours the server's ``Retry-After``;
- the attempts are used up: **dead-letter** with the last reason. Never a silent drop, never an
  immediate requeue that could spin.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import Contended, PermanentError, RetryableError
from common.topology import WorkQueue

DEFAULT_MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class Ack:
    pass


@dataclass(frozen=True)
class Retry:
    delay_seconds: int
    reason: str
    counts: bool = True  # raises the attempt number (False: contention, nothing failed)


@dataclass(frozen=True)
class DeadLetter:
    reason: str


Decision = Ack | Retry | DeadLetter


def describe_error(error: BaseException) -> str:
    text = str(error) or error.__class__.__name__
    return f"{error.__class__.__name__}: {text}"


def decide(
    error: BaseException | None,
    *,
    attempt: int,
    queue: WorkQueue,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> Decision:
    """Decide the fate of a delivery. ``attempt`` counts from 1 for the first handling."""
    if error is None:
        return Ack()
    reason = describe_error(error)
    if isinstance(error, PermanentError):
        return DeadLetter(reason)
    if isinstance(error, Contended):
        # Wait out the holder's lease, in the first tier that covers it; not an attempt.
        return Retry(queue.tier_for(error.retry_after or 0), reason, counts=False)
    if attempt >= max_attempts:
        return DeadLetter(f"gave up after {attempt} attempts; last error: {reason}")
    backoff = queue.retry_tiers[min(attempt - 1, len(queue.retry_tiers) - 1)]
    wanted = backoff
    if isinstance(error, RetryableError) and error.retry_after:
        wanted = max(backoff, error.retry_after)
    return Retry(queue.tier_for(wanted), reason)
