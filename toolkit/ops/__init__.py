"""The playbook's engine: what `fab ...` does on the hosts of an inventory.

- transport.py: LocalHost and SSHHost behind one Host contract (run, start, put, read, stream).
- cluster.py: an inventory bound to transports, the fan-out over hosts (a result per host and
  role instance), the files each host gets, and the start/stop/systemd operations.
- status.py, logs.py, preview.py: `fab status`, `fab logs`, `fab render`.
- provision.py, probe.py: `fab deploy` and `fab doctor` (probe.py runs on the host).
The protocol with the remote `ember daemon` is toolkit/daemon/protocol.py, below this layer.
"""
