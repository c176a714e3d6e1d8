"""The base layer: standard library only, importable by every layer above it.

- files.py: atomic writes and the bundle of files a host receives on a command's input.
- pidfile.py, procs.py: pid files, and whether the process they name is ours and alive.
- notify.py: sd_notify (READY=1, WATCHDOG=1) to systemd or to `ember daemon`'s listener.
- envfile.py: `ember-env.sh`'s KEY=value syntax, read without a shell.
"""
