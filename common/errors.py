"""The one error hierarchy of pwasync.

Every failure that crosses a module boundary is one of these. Library exceptions (httpx, pika,
redis, msal results) are translated where the library is called, so the deciding code and the
ack policy only ever see this hierarchy:

- ``ConfigError``: the operator must fix a setting; the process exits with code 2.
- ``RetryableError``: the same work may succeed later (timeouts, 5xx, 429, a broker or Redis
  that is down). Carries an optional ``retry_after`` hint in seconds. ``Contended``: another
  worker holds the work; retried without counting an attempt.
- ``PermanentError``: doing the same work again cannot succeed (other 4xx, bad input, a missing
  mailbox, a rejected sign-in). Goes to the dead-letter queue with its reason.
"""

from __future__ import annotations


class PwasyncError(Exception):
    """Root of every error pwasync raises on purpose."""


class ConfigError(PwasyncError):
    """A setting is missing or malformed. The message names the variable, never its value."""


class RetryableError(PwasyncError):
    """Transient failure: retry later, after ``retry_after`` seconds when the server said so."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Contended(RetryableError):
    """Another worker holds the same piece of work right now (a task's lease): nothing failed.
    Retried once the holder's lease may have ended (``retry_after``) without counting as a
    failed attempt, so a crashed replica's leases can never use up a message's attempts."""


class Stopping(RetryableError):
    """The process is stopping: the work in hand is given up where it stands and done again
    later (a wait for a server's Retry-After is not sat out past SIGTERM)."""


class PermanentError(PwasyncError):
    """Failure that repeating the same work cannot fix."""


class BadMessage(PermanentError):
    """A message body that is not JSON, does not fit its schema, or has an unknown version."""


class ServiceUnavailable(RetryableError):
    """RabbitMQ or Redis cannot be reached."""


class AuthenticationError(PermanentError):
    """Sign-in was refused (wrong password, revoked consent, bad client secret, MFA required)."""


class ApiError(PwasyncError):
    """Mixin data for failures reported by a remote HTTP API."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[call-arg]
        self.status = status
        self.code = code


class RetryableApiError(ApiError, RetryableError):
    """Timeout, connection failure, 5xx or 429 from Project Online or Graph."""


class PermanentApiError(ApiError, PermanentError):
    """A 4xx other than 408/429 from Project Online or Graph."""


class PublishError(PwasyncError):
    """Base for failures to hand a message to RabbitMQ."""


class UnroutableMessage(PublishError, PermanentError):
    """The broker returned a mandatory message: no queue is bound for its routing key."""


class PublishNotConfirmed(PublishError, RetryableError):
    """The broker nacked the message or the connection broke before it confirmed it."""


class NotAllConfirmed(PublishError):
    """Part of a batch was not confirmed. ``confirmed`` holds the positions (in the batch) of
    the messages the broker did confirm; ``cause`` is the first failure, whose class says
    whether trying again may help (``RetryableError``) or not (``PermanentError``)."""

    def __init__(self, message: str, *, confirmed: frozenset[int], cause: BaseException) -> None:
        super().__init__(message)
        self.confirmed = confirmed
        self.cause = cause
