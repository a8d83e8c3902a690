"""End-to-end tests: vaultctl as a process (a package so module names cannot clash)."""
