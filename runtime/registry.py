"""Name -> object registries for model families, backends and runners.

Keys are names; an Enum member (a `Backend`) stands for its value, so a registry keyed by
backend is looked up with the enum or with the name a manifest stores."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Generic, TypeVar

from runtime.errors import HandheldError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | Enum) -> Callable[[T], T]:
        name = _key(name)

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str | Enum) -> T:
        name = _key(name)
        if name not in self._entries:
            raise HandheldError(
                f"unknown {self.kind} {name!r}",
                f"use one of: {', '.join(sorted(self._entries)) or '(none registered)'}",
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str | Enum) -> bool:
        return _key(name) in self._entries


def _key(name: str | Enum) -> str:
    return name.value if isinstance(name, Enum) else name
