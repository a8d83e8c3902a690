"""Profile a server under load with py-spy: where does a call's time go?

Starts the vault (on a copy of a data dir preloaded with 10k tokens) or the echo
baseline, drives it with ``loadgen.py``, samples the server with ``py-spy record``
(which must be installed: ``pip install py-spy``) and prints the hottest functions by
own time and by inclusive time, over the samples that hold the GIL (Python work) and
over all non-idle samples. ``--svg`` also writes a flame graph.

    python bench/profile_server.py tokenize_unary --concurrency 16 --seconds 8
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run
from run import BENCH, PROCS, PYTHON, Context, Mode, preload, start_server, vault_cmd

PY_SPY = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``, aggregating over lines."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{m['func']} ({Path(m['file']).name})"


def summarize(raw: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("thread (")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "own time:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    out += ["", "inclusive time:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out)


def record(pid: int, seconds: float, fmt: str, out: Path, *, gil: bool, native: bool) -> None:
    assert PY_SPY is not None
    cmd = [PY_SPY, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    cmd += ["--format", fmt, "--output", str(out), "--rate", "250"]
    if gil:
        cmd.append("--gil")
    # --native needs the process paused at each sample; without it sampling is not
    # blocking, so the profile disturbs the server less.
    cmd.append("--native" if native else "--nonblocking")
    subprocess.run(cmd, check=True, capture_output=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenario", choices=[*run.MAIN_SCENARIOS, *run.ECHO_SCENARIOS])
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0, help="seconds sampled per recording")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--svg", type=Path, help="also write a flame graph here")
    p.add_argument("--native", action="store_true", help="include C/Cython frames")
    args = p.parse_args()
    if PY_SPY is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 1
    recordings = 3 if args.svg else 2
    tmp = Path(tempfile.mkdtemp(prefix="vault-profile-"))
    ctx = Context(
        Mode("profile", recordings * (args.seconds + 2) + 5, 1.0, (), ()), tmp, keep=False
    )
    try:
        echo = args.scenario.startswith("echo_")
        key = ""
        if echo:
            server = start_server(
                [PYTHON, str(BENCH / "echo_server.py"), "--listen", "127.0.0.1:0"],
                tmp / "echo.log",
            )
        else:
            preload(ctx, ctx.template, run.BASE_TOKENS, ctx.template_tokens)
            server = start_server(vault_cmd(ctx.template), tmp / "vault.log", ctx.template)
            key = (ctx.template / "dev-api-key").read_text().strip()
        cmd = [PYTHON, str(BENCH / "loadgen.py"), "--target", server.target]
        cmd += ["--scenario", args.scenario, "--concurrency", str(args.concurrency)]
        cmd += ["--duration", str(ctx.mode.duration), "--warmup", "1", "--key", key]
        cmd += ["--tokens-file", str(ctx.template_tokens)]
        with (tmp / "loadgen.log").open("ab") as log:
            client = PROCS.start(cmd, stdout=subprocess.DEVNULL, stderr=log)
        time.sleep(4)  # the client builds its requests, connects and warms up
        for gil in (True, False):
            raw = tmp / f"profile-{'gil' if gil else 'all'}.txt"
            record(server.proc.pid, args.seconds, "raw", raw, gil=gil, native=args.native)
            what = "holding the GIL" if gil else "all non-idle threads"
            print(f"== {args.scenario} c={args.concurrency}: samples {what}")
            print(summarize(raw, args.top))
            print()
        if args.svg:
            record(
                server.proc.pid, args.seconds, "flamegraph", args.svg, gil=False, native=args.native
            )
            print(f"flame graph: {args.svg}")
        PROCS.stop(client)
    finally:
        PROCS.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
