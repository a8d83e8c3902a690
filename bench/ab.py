"""A/B of the issue-14 target scenarios: a base commit against this tree, alternating
base/new runs, medians of the ratios over the runs.

    .venv/bin/python bench/ab.py --base-commit 37c497c --runs 3 --out bench/results/ab-issue14

The base tree is `git archive`d into a temporary folder and run with this venv's Python
and its `src` first on PYTHONPATH (so its own code, protos and bench are measured; the
libraries are this venv's). Each run is `bench/run.py --full --only ...` of that tree
with the given duration; its JSON lands in ``--out`` as rN_base.json / rN_new.json.
Scenarios the base bench does not know are left out of its runs (reported as n/a).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import run

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = (
    "echo_unary",
    "tokenize_unary",
    "detokenize_unary",
    "detokenize_batch",
    "tokenize_stream",
    "workers",
    "postgres",
)


def known_scenarios(tree: Path) -> list[str]:
    text = (tree / "bench" / "run.py").read_text(encoding="utf-8")
    return [s for s in SCENARIOS if f'"{s}"' in text]


def run_once(tree: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    only = ",".join(s for s in known_scenarios(tree) if s in args.scenarios.split(","))
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    cmd = [sys.executable, str(tree / "bench" / "run.py"), "--full", "--only", only]
    cmd += ["--duration", str(args.duration), "--concurrency", args.concurrency]
    cmd += ["--retries", "0", "--quiet-wait", "0", "--out", str(out.with_suffix(""))]
    subprocess.run(cmd, cwd=tree, env=env, check=False, timeout=1800)
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


def _other_load(report: dict[str, Any]) -> float | None:
    loads = [
        p["other_load_cores"]
        for s in report["scenarios"].values()
        for p in s.get("points", [])
        if isinstance(p.get("other_load_cores"), float | int)
    ]
    return round(statistics.median(loads), 2) if loads else None


def target_values(report: dict[str, Any], concurrency: tuple[int, ...]) -> dict[str, Any]:
    """This tree's ratios and targets over a run's points (the base bench has fewer)."""
    _, extra = run.compute_ratios(report["scenarios"], run.MODES["full"], concurrency)
    return {t["name"]: t["value"] for t in run.evaluate_targets(extra)}


def median_values(values: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in values[0]:
        vals = [v[name] for v in values if v.get(name) is not None]
        out[name] = round(statistics.median(vals), 3) if vals else None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-commit", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--concurrency", default="16,64")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="a subset, e.g. tokenize_unary,detokenize_unary,postgres for the PostgreSQL ratios",
    )
    args = p.parse_args()
    args.out = args.out.resolve()  # (each run's cwd is its own tree)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vault-ab-base-") as tmp:
        base = Path(tmp)
        archive = subprocess.run(
            ["git", "archive", args.base_commit], cwd=REPO, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
        runs: dict[str, list[dict[str, Any]]] = {"base": [], "new": []}
        for i in range(1, args.runs + 1):
            for side, tree in (("base", base), ("new", REPO)):
                print(f"run {i} {side}", flush=True)
                runs[side].append(run_once(tree, args.out / f"r{i}_{side}.json", args))
    levels = tuple(int(c) for c in args.concurrency.split(","))
    summary: dict[str, Any] = {
        "base_commit": args.base_commit,
        "runs": args.runs,
        "duration_s": args.duration,
        "concurrency": args.concurrency,
    }
    for side, reports in runs.items():
        values = [target_values(r, levels) for r in reports]
        summary[side] = {
            "medians": median_values(values),
            "per_run": values,
            "other_load_cores_median": [_other_load(r) for r in reports],
        }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
