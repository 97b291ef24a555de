"""Named registries that check what goes in and say what is there.

Names come from configs and command lines, so a typo must fail with the list of names that do
exist (and how to add one), not with a bare KeyError. Two plugins must not silently shadow each
other: a name already bound to a different item is an error naming that item. Registering the
same item again under its name is a no-op, so importing a plugin file twice is harmless. Names
are restricted to a plain form because they appear in TOML tables, `--set` keys and run ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from adaptscope.errors import RegistryError

T = TypeVar("T")

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]*")
NAME_RULE = "a lower-case letter followed by lower-case letters, digits, '_' or '-'"


def _describe(item: object) -> str:
    module, qualname = getattr(item, "__module__", None), getattr(item, "__qualname__", None)
    if module and qualname:
        return f"{module}.{qualname}"
    return repr(item)


class Registry(Generic[T]):
    """Items of one kind (methods, metric backbones, ...) by checked, unique name."""

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint  # appended to the unknown-name error, e.g. how to add one of your own
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Bind `name` to `item`; returns `item`. The same item again is a no-op."""
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise RegistryError(f"malformed {self.kind} name {name!r}: a name is {NAME_RULE}")
        if name in self._items:
            existing = self._items[name]
            if existing is item:
                return item
            raise RegistryError(
                f"{self.kind} {name!r} is already registered by {_describe(existing)}; "
                f"{_describe(item)} needs another name")
        self._items[name] = item
        return item

    def add(self, name: str) -> Callable[[T], T]:
        """Decorator form of `register`."""

        def wrap(item: T) -> T:
            return self.register(name, item)

        return wrap

    def unregister(self, name: str) -> T:
        """Remove `name` and return its item (for tests and for reloading a plugin)."""
        item = self.get(name)
        del self._items[name]
        return item

    def get(self, name: str) -> T:
        """The item registered as `name`; an unknown name fails listing the registered ones."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            registered = ", ".join(self.names()) or "none"
            raise RegistryError(
                f"unknown {self.kind} {name!r}; registered: {registered}" + self.hint) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._items[name]) for name in self.names()]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
