"""The playbook's engine: what `fab ...` does on the hosts of an inventory.

- transport.py: the Host contract on one primitive (start a command, send to it, read its
  lines, finish it), with ``run`` and ``stream`` written once; LocalHost. ssh.py: SSHHost.
- group.py: one call on many hosts, a result per host (GroupResult), never printed; Outcome;
  the Events a caller hears. show.py: all the printing (outcome lines, summary, status table).
- cluster.py: an inventory bound to transports, the files each host gets, and the
  `ember daemon` commands run there, read through toolkit/daemon/protocol.py.
- Operations, thin, composing those: lifecycle.py (start-all, stop-all, restart-all and their
  parts), units.py (install/uninstall-systemd), status.py, logs.py, preview.py (`fab render`),
  provision.py + probe.py (`fab deploy`, `fab doctor`; probe.py runs on the host).
"""
