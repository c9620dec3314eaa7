"""The pure core: typed events, the subject grammar, the fold, and the rules built on them.

Everything here is synchronous and deterministic: no asyncio, no NATS or Kubernetes client, no
clock reads and no random ids (time and ids come in as arguments), so the same events give the
same state and the same plan in every cluster. import-linter holds the room to that.

* :mod:`.events` - the events of the log (frozen msgspec structs, one tagged union);
* :mod:`.subjects` - the subject grammar and its reversible escaping;
* :mod:`.fold` - events in, clusterset state out;
* :mod:`.mcs`, :mod:`.inventory`, :mod:`.leases` - the MCS merge and conflict rules, the
  ClusterProfile rules, the cross-cluster lease rules;
* :mod:`.plan` - desired objects against observed objects, as actions;
* :mod:`.errors` - the error hierarchy every room raises.
"""
