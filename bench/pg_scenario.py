"""The PostgreSQL points of the benchmark: tokenize and detokenize, unary, at the top
concurrency, against `vaultctl serve --database-url` on a throwaway cluster (the
tests' pgcluster.py, with fsync on), after `vaultctl store copy` of the preloaded
SQLite template (so the same 10k tokens are stored as in the SQLite points).

The PostgreSQL server runs on the same two cores: its CPU shows as "other load" of
these points (it is part of what they cost, not a disturbance).

Without PostgreSQL installed the scenario is reported as skipped (with CI=true, as
failed: .ci/run installs it).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import PgCluster, find_pg_bin

SKIPPED = "PostgreSQL is not installed (no initdb)"
SCENARIOS = ("tokenize_unary", "detokenize_unary")


def run(
    ctx: Any,
    points: list[dict[str, Any]],
    point: Callable[..., None],
    run_vault_point: Callable[..., dict[str, Any]],
    vaultctl: str,
    workers_channels: int | None = None,
) -> str | None:
    """Measure the points into ``points``; a reason when the scenario cannot run."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        if os.environ.get("CI", "").lower() == "true":
            msg = f"{SKIPPED}; CI must run it"
            raise RuntimeError(msg)
        return SKIPPED
    cluster = PgCluster(bin_dir, durable=True)
    try:
        cluster.start()
        c = max(ctx.mode.concurrency)
        plan: list[tuple[str, int | None]] = [(s, None) for s in SCENARIOS]
        if workers_channels:
            # Scale-out efficiency on PostgreSQL too (issue 14): 1 and 2 processes.
            plan += [("tokenize_unary", 1), ("tokenize_unary", 2)]
        for scenario, workers in plan:

            def measure(s: str = scenario, w: int | None = workers) -> dict[str, Any]:
                with ctx.fresh_copy(f"pg-{s}") as data_dir:
                    url, subject_keys = _copy_to_cluster(cluster, vaultctl, data_dir)
                    extra = ["--database-url", url, "--subject-key-database-url", subject_keys]
                    if w is None:
                        return run_vault_point(ctx, s, c, data_dir=data_dir, extra=extra, op=s)
                    return run_vault_point(
                        ctx,
                        s,
                        c,
                        data_dir=data_dir,
                        extra=[*extra, "--workers", str(w)],
                        channels=workers_channels,
                        op=s,
                        workers=w,
                    )

            label = f"{scenario} c={c}" + ("" if workers is None else f" workers={workers}")
            point(ctx, points, "postgres", label, measure)
    finally:
        with contextlib.suppress(Exception):
            cluster.destroy()
    return None


def _copy_to_cluster(cluster: PgCluster, vaultctl: str, data_dir: Path) -> tuple[str, str]:
    """Copy the fresh SQLite store into two new databases: (store url, subject keys url)."""
    url = cluster.url(cluster.create_database())
    # The subject keys: a database of their own (never the store's).
    subject_keys = cluster.url(cluster.create_database())
    copied = subprocess.run(
        [
            vaultctl,
            "store",
            "copy",
            "--from",
            f"sqlite://{data_dir / 'vault.db'}",
            "--to",
            url,
            "--subject-keys-to",
            subject_keys,
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if copied.returncode != 0:
        msg = f"store copy failed: {copied.stderr.strip()}"
        raise RuntimeError(msg)
    return url, subject_keys
