"""mcsync: an event-sourced sync engine for multi-cluster Kubernetes over NATS JetStream.

The package is split in layers (enforced by import-linter, see ``.importlinter``):

* the *core* (``events``, ``subjects``, ``fold``, ``mcs``, ``plan``) is pure and synchronous;
* the *ports* (``eventlog``, ``kube``) do I/O against NATS and Kubernetes;
* the *tools* (``natsserver``, ``controlplane``, ``cli``) run local stacks and commands.
"""

__version__ = "0.1.0"
