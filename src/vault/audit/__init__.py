"""audit layer: the tamper-evident trail of reveals, deletions, caller changes and refusals."""
