"""Every setting of Ember, declared once, and the parsers of their values.

Each setting names its EMBER_* variable, its flag, its parser, its default (and how help and
the README say it), its inventory key, and whether it steps by one per worker instance. The CLI
builds its flags and resolves flag -> variable -> default from here; `ember daemon` reads its
host-wide settings through here; the inventory checks every key with the setting's parser; the
playbook projects an inventory into each host's ember-env.sh from here; a test holds the
README's tables to it. Standard library only (and toolkit.errors): every layer may import it.
"""

from toolkit.settings.parsers import (
    choice,
    fixed_port,
    ident,
    memory,
    one_line,
    parse_memory_mb,
    path,
    port,
    positive_int,
    present,
    seconds,
    seconds_or_off,
    user_name,
    whole_number,
)
from toolkit.settings.registry import (
    BACKENDS,
    HOME,
    LOG_LEVELS,
    REMOTE_HOME,
    SETTINGS,
    Setting,
    default_home,
    default_of,
    host_wide,
    inventory_keys,
    named,
    of_role,
    parsed,
    resolve,
)

__all__ = [
    "BACKENDS", "HOME", "LOG_LEVELS", "REMOTE_HOME", "SETTINGS", "Setting", "choice",
    "default_home", "default_of", "fixed_port", "host_wide", "ident", "inventory_keys",
    "memory", "named", "of_role", "one_line", "parse_memory_mb", "parsed", "path", "port",
    "positive_int", "present", "resolve", "seconds", "seconds_or_off", "user_name",
    "whole_number",
]
