"""The numbered migrations shipped with the package, per dialect."""

from __future__ import annotations

from importlib import resources

__all__ = ["migrations"]


def migrations(dialect: str) -> list[tuple[int, str]]:
    """Numbered migrations shipped with the package: (number, SQL) in order."""
    folder = resources.files("vault.storage") / "migrations" / dialect
    found = [
        (int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)
