"""Which environments a host is using, held so that no prune, in any process, deletes them.

A plugin's environment is in use from the moment it is prepared until the plugin is removed
or reloaded onto another one, and a worker's from its assignment until it exits: the old
version of a reloaded plugin still imports from its environment while it drains. Each use is a
``Lease``. The first lease on a key takes a shared ``flock`` on the key's lock file; the store's
prune takes an exclusive one without waiting, so it skips the key. Other hosts sharing the cache
and ``autoweave-plugins prepare --prune`` see the same lock.

Taking and dropping the last lease on a key also stamps the environment's mtime, which is how
the periodic prune tells an environment unused for a day from one used a minute ago.
"""

from __future__ import annotations

import os

from autoweave_plugins.environments.model import Environment
from autoweave_plugins.environments.store import ENV_METADATA, KeyLock, Store, touch

__all__ = ["Lease", "Leases"]


class Lease:
    """One use of an environment. ``release`` it once the use ends (more calls do nothing)."""

    __slots__ = ("_leases", "_released", "environment")

    def __init__(self, environment: Environment, leases: Leases) -> None:
        self.environment = environment
        self._leases = leases
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._leases._drop(self.environment)


class Leases:
    """The leases of one host, counted per environment key."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._held: dict[str, tuple[KeyLock, int]] = {}

    def __len__(self) -> int:
        return len(self._held)

    @property
    def keys(self) -> frozenset[str]:
        """Keys of the environments in use now."""
        return frozenset(self._held)

    def take(self, environment: Environment) -> Lease | None:
        """A lease on ``environment``; None when it is gone, or being deleted right now, so
        the caller should ``ensure`` it again."""
        held = self._held.get(environment.key)
        if held is not None:
            self._held[environment.key] = (held[0], held[1] + 1)
            return Lease(environment, self)
        lock = self.store.lock(environment.key)
        try:
            if not lock.try_acquire(shared=True):
                return None  # a prune or a rebuild holds it exclusively
        except OSError:
            return None  # the cache itself is gone
        # Locked only now: a prune may have finished between the caller's lookup and here.
        if not os.path.exists(environment.root / ENV_METADATA):
            lock.release()
            return None
        touch(environment.root)
        self._held[environment.key] = (lock, 1)
        return Lease(environment, self)

    def _drop(self, environment: Environment) -> None:
        held = self._held.get(environment.key)
        if held is None:
            return  # released by close() already
        lock, count = held
        if count > 1:
            self._held[environment.key] = (lock, count - 1)
            return
        del self._held[environment.key]
        touch(environment.root)
        lock.release()

    def close(self) -> None:
        """Let go of every lease (the host is stopping; its workers are gone)."""
        for lock, _count in self._held.values():
            lock.release()
        self._held.clear()
