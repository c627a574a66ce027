"""The forms of ``PWASYNC_REDIS_URL`` (interface page), parsed into what the client needs.

- ``redis://`` / ``rediss://`` / ``unix://``: one server, as redis-py reads it;
- ``redis+sentinel://[[user]:password@]host:port[,host:port…]/MASTER_NAME[/DB]``: the Sentinels
  of one master (the password is the master's; the Sentinels' own is a setting of its own);
- ``redis+cluster://[[user]:password@]host:port[,host:port…]``: some nodes of a Redis Cluster
  (the client learns the rest from them); a cluster has database 0 only.

Plain functions, so that every form and every mistake is tested without a server. Errors are
``ValueError`` and never echo the URL (it may hold a password).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

SENTINEL = "redis+sentinel"
CLUSTER = "redis+cluster"
SINGLE_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_PORTS = {SENTINEL: 26379, CLUSTER: 6379}


@dataclass(frozen=True)
class RedisTarget:
    kind: Literal["single", "sentinel", "cluster"]
    url: str
    hosts: tuple[tuple[str, int], ...] = ()  # sentinel / cluster: the addresses given
    username: str | None = None
    password: str | None = None
    master: str | None = None  # sentinel: the name the Sentinels monitor it by
    db: int = 0

    @property
    def address(self) -> str:
        """Where it is, for messages: never the credentials."""
        if self.kind == "single":
            parts = urlsplit(self.url)
            if parts.scheme == "unix":
                return parts.path
            return f"{parts.hostname}:{parts.port or 6379}"
        nodes = ",".join(f"{_host_text(host)}:{port}" for host, port in self.hosts)
        if self.kind == "sentinel":
            return f"master {self.master} of the Sentinels {nodes}"
        return f"the cluster of {nodes}"


def parse_redis_url(url: str) -> RedisTarget:
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in SINGLE_SCHEMES:
        parts = urlsplit(url)
        if scheme != "unix" and not parts.hostname:
            raise ValueError("names no host")
        return RedisTarget("single", url)
    if scheme not in (SENTINEL, CLUSTER) or not rest:
        raise ValueError("must be a redis://, rediss://, redis+sentinel:// or redis+cluster:// URL")
    if "?" in rest or "#" in rest:
        raise ValueError(f"a {scheme}:// URL takes no query or fragment")
    netloc, _, path = rest.partition("/")
    credentials, at, hosts_text = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = tuple(_host_port(item, DEFAULT_PORTS[scheme]) for item in hosts_text.split(","))
    segments = [segment for segment in path.split("/")] if path else []
    if scheme == SENTINEL:
        if not segments or not segments[0]:
            raise ValueError("a redis+sentinel:// URL must name the master: …/MASTER_NAME[/DB]")
        if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
            raise ValueError("a redis+sentinel:// URL ends with /MASTER_NAME or /MASTER_NAME/DB")
        db = int(segments[1]) if len(segments) == 2 else 0
        return RedisTarget("sentinel", url, hosts, username, password, unquote(segments[0]), db)
    if segments not in ([], [""], ["0"]):
        raise ValueError("a Redis Cluster has database 0 only: redis+cluster://host:port,…")
    return RedisTarget("cluster", url, hosts, username, password)


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, _, after = item[1:].partition("]")
        port_text = after.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError("names an empty host (host:port, separated by commas)")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError("names a port that is not a number from 1 to 65535")
    return host, int(port_text) if port_text else default_port


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host
