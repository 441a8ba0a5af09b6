"""How a channel layer lays realtime's traffic out over Redis hosts.

Internal. Everything realtime needs to know about channels_redis's insides is here, so
the broker can publish with its own Lua scripts (one round trip, a deadline, an
idempotency record) into the pubsub channels the layer listens on:

* the Redis host dicts of the layer (several hosts: *shards*; a host may be a Sentinel
  ``master_name`` + ``sentinels`` entry);
* the pubsub channel that carries a layer group (``<prefix>__group__<group>``) and the
  shard that carries it: ``RedisPubSubChannelLayer`` picks a host per group with its
  consistent hash, and :meth:`Topology.shard_of_group` is that same function;
* the shard of a realtime channel: the shard of its exact group. Its history and
  presence live there too, so one script can number, store and publish;
* per-shard groups for the topics that publications of every channel are copied to
  (pattern trees, bare patterns, probes): one group per shard, each named so that it
  lands on its shard, so each copy of a publication goes out on the channel's own shard
  and one round trip still carries all of them;
* the pubsub connection the layer holds for each shard on this event loop, so the
  broker can notice it reconnecting (Redis restarted, failed over);
* the reply parser of those connections (:func:`quiet_pubsub`).

With one host nothing is renamed: the groups are the plain ``names.group_name`` ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from .names import group_name

PUBSUB = "channels_redis.pubsub"
CORE = "channels_redis.core"


def is_copy_topic(topic: str) -> bool:
    """Topics every channel's publications are copied to (patterns), rather than one
    channel's own topic: ``tree:<first segment>`` and ``*`` (see ``names.topic``)."""
    return topic == "*" or topic.startswith("tree:")


def consistent_hash(value: str, ring: int) -> int:
    """channels_redis's host for ``value`` among ``ring`` hosts (its own function)."""
    from channels_redis.utils import _consistent_hash

    return _consistent_hash(value, ring)


@dataclass
class Topology:
    """The Redis side of one layer object."""

    # The layer's Redis hosts ([] for a layer that is not channels_redis).
    hosts: list[dict]
    # RedisPubSubChannelLayer: a group is one pubsub channel the scripts can PUBLISH to.
    pubsub: bool = False
    # The pubsub channel prefix of groups (pubsub layers).
    group_prefix: str = ""
    # Messages are plain msgpack (no encryption): scripts can append to them.
    plain: bool = False
    _on_shard: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, layer) -> Topology:
        from channels_redis.utils import decode_hosts

        module = type(layer).__module__
        if module == PUBSUB:
            options = layer._kwargs
            hosts = decode_hosts(options.get("hosts") or (layer._args[0] if layer._args else None))
            probe = {"type": "x", "n": [1, True]}
            plain = layer.serialize(probe) == msgpack.packb(probe)
            return cls(hosts, True, f"{options.get('prefix', 'asgi')}__group__", plain)
        if module.startswith("channels_redis"):
            return cls(list(layer.hosts))
        return cls([])

    @property
    def shards(self) -> int:
        return len(self.hosts)

    def channel(self, group: str) -> str:
        """The pubsub channel that carries ``group`` (pubsub layers)."""
        return self.group_prefix + group

    def shard_of_group(self, group: str) -> int:
        if self.shards < 2:
            return 0
        return consistent_hash(self.channel(group) if self.pubsub else group, self.shards)

    def shard_of(self, name: str) -> int:
        """The shard that carries the channel ``name``'s publications, history and presence."""
        return self.shard_of_group(group_name(name))

    def group_on(self, topic: str, shard: int) -> str:
        """The group that carries ``topic`` on ``shard``: a channel's own topic has one
        group (on its own shard, whatever ``shard`` says); copy topics have one per shard."""
        base = group_name(topic)
        if self.shards < 2 or not is_copy_topic(topic):
            return base
        return self.on_each_shard(base)[shard]

    def groups(self, topic: str) -> list[str]:
        """Every group a listener of ``topic`` joins."""
        if self.shards < 2 or not is_copy_topic(topic):
            return [group_name(topic)]
        return self.on_each_shard(group_name(topic))

    def on_each_shard(self, base: str) -> list[str]:
        """One group per shard, named after ``base`` so that the i-th lands on shard i."""
        if self.shards < 2:
            return [base]
        found = self._on_shard.get(base)
        if found is None:
            found = []
            for shard in range(self.shards):
                suffix = 0
                while self.shard_of_group(f"{base}.{suffix}") != shard:
                    suffix += 1
                found.append(f"{base}.{suffix}")
            self._on_shard[base] = found
        return found

    def pubsub_connections(self, layer) -> list:
        """The layer's pubsub connection to each shard on this event loop (None where it
        has none yet); [] for layers without one."""
        if not self.pubsub:
            return []
        shards = getattr(layer._get_layer(), "_shards", [])
        found = []
        for shard in shards:
            pubsub = getattr(shard, "_pubsub", None)
            found.append(getattr(pubsub, "connection", None))
        return found


def quiet_pubsub(layer) -> None:
    """Give the layer's pubsub connections on this event loop a reply parser that hands
    each pubsub message on as it is.

    redis-py 8's parsers pass every pubsub message through a default handler that does
    ``logging.getLogger(...)`` and ``logger.debug("Push response: " + str(message))``
    whether or not debug logging is on: the ``str`` of the whole message, payload
    included, and the logging module's lock, for every publication a process receives
    (9% of the server's CPU with many channels, ``bench/run.py --profile``). The parser
    is chosen per connection pool from the host dict, so this sets ``parser_class`` on
    the hosts of shards that have not connected yet; a host that names its own
    ``parser_class`` keeps it. Call it before the first ``group_add`` on the loop.
    """
    inner = layer._get_layer() if hasattr(layer, "_get_layer") else None
    for shard in getattr(inner, "_shards", ()):
        host = getattr(shard, "host", None)
        if isinstance(host, dict) and "parser_class" not in host and getattr(shard, "_redis", None) is None:
            shard.host = {**host, "parser_class": _quiet_parser()}


_QUIET_PARSER = None


def _quiet_parser() -> type:
    """redis-py's default asyncio parser (hiredis's when installed), whose pubsub
    messages skip the debug line (see quiet_pubsub)."""
    global _QUIET_PARSER
    if _QUIET_PARSER is None:
        from redis.asyncio.connection import DefaultParser

        class QuietPubSubParser(DefaultParser):
            async def handle_pubsub_push_response(self, response):
                return response

        _QUIET_PARSER = QuietPubSubParser
    return _QUIET_PARSER
