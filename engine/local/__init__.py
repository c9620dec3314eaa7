"""Launchers of local servers: nats-server and kube-apiserver (with etcd), for tests and demos.

Nothing in a deployed mcsync process imports this room; it starts real processes on this machine
(``scripts/build-control-plane.sh`` builds the control-plane binaries into a versioned cache).
"""
