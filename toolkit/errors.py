"""One exception root for the library; subclasses also inherit the matching builtin."""


class EmberError(Exception):
    """Base of every error Ember raises on purpose."""


class ConfigError(EmberError, ValueError):
    """A setting, flag, environment variable or file holds a value Ember cannot use."""


class WireError(EmberError, ConnectionError):
    """A peer broke the protocol; only its connection is closed."""


class FatalError(EmberError):
    """The process cannot go on safely (a master that cannot record what it acknowledges):
    it exits non-zero, so that its supervisor starts it again."""


class NotLeaderError(EmberError, ConnectionError):
    """The master asked does not lead (a standby, or still recovering): nothing was done."""


class AuthError(WireError):
    """The handshake failed: wrong or missing cluster secret, or a version mismatch."""
