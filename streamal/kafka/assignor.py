"""One active learner: every partition goes to one member of the group, the others wait as standbys.

>>> from types import SimpleNamespace
>>> cluster = SimpleNamespace(partitions_for_topic=lambda topic: {0, 1})
>>> a = SingleActiveAssignor()
>>> first = a.assign(cluster, {"m-a": a.metadata(["labels"])})
>>> a.on_assignment(first["m-a"])                             # m-a is the active learner
>>> late = SingleActiveAssignor()                             # a standby joins, first by member id
>>> again = a.assign(cluster, {"m-a": a.metadata(["labels"]), "m-0": late.metadata(["labels"])})
>>> again["m-a"].assignment, again["m-0"].assignment          # everything stays with the active one
([('labels', [0, 1])], [])
>>> after = late.assign(cluster, {"m-0": late.metadata(["labels"])})   # m-a died: m-0 takes over
>>> after["m-0"].assignment
[('labels', [0, 1])]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

_OWNS = b"active"


class SingleActiveAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Assigns every partition of every subscribed topic to one member, and keeps them there.

    The learner must be a single writer of the model. A member that owns the partitions says so in the
    metadata it joins with, and keeps them at every rebalance (a standby joining does not take them over);
    only when it has left or died do they go to another member (the first by member id), which continues
    from the checkpoint the active one left. Pass an instance (it remembers whether its member is active).
    """

    name = "streamal-single-active"
    version = 0

    def __init__(self) -> None:
        self.active = False

    def assign(
        self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        owners = sorted(m for m, metadata in members.items() if metadata.user_data == _OWNS)
        active = owners[0] if owners else min(members)
        topics: set[str] = set()
        for metadata in members.values():
            topics.update(metadata.subscription)
        owned = sorted((t, sorted(cluster.partitions_for_topic(t) or ())) for t in topics)
        return {
            member: ConsumerProtocolMemberAssignment(self.version, owned if member == active else [], b"")
            for member in members
        }

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(self.version, list(topics), _OWNS if self.active else b"")

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self.active = bool(assignment.assignment)
