"""`fab` entry point: the tasks live in playbook/; see `fab --list`."""

from playbook import ns

__all__ = ["ns"]
