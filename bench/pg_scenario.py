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
        for scenario in SCENARIOS:

            def measure(s: str = scenario) -> dict[str, Any]:
                with ctx.fresh_copy(f"pg-{s}") as data_dir:
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
                    return run_vault_point(
                        ctx,
                        s,
                        c,
                        data_dir=data_dir,
                        extra=[
                            "--database-url",
                            url,
                            "--subject-key-database-url",
                            subject_keys,
                        ],
                        op=s,
                    )

            point(ctx, points, "postgres", f"{scenario} c={c}", measure)
    finally:
        with contextlib.suppress(Exception):
            cluster.destroy()
    return None
