"""The coverage-guided campaign over the request decoders (atheris_decoders.py), run as a
process: libFuzzer exits the process when it ends. A fixed number of runs and a fixed
seed in ``make test``; many more, and a fresh seed, under ``make fuzz``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SEED_CORPUS = HERE.parent / "data" / "fuzz" / "decoder_corpus"
LONG = os.environ.get("VAULT_FUZZ_PROFILE") == "fuzz"


def test_request_decoders_raise_nothing_but_invalid_argument(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    artifacts = tmp_path / "crashes"
    artifacts.mkdir()
    args = [
        f"-runs={2_000_000 if LONG else 30_000}",
        f"-seed={0 if LONG else 20261207}",
        "-max_len=1024",
        f"-artifact_prefix={artifacts}/",
        str(corpus),
        str(SEED_CORPUS),
    ]
    done = subprocess.run(
        [sys.executable, str(HERE / "atheris_decoders.py"), *args],
        capture_output=True,
        text=True,
        timeout=1800 if LONG else 120,
        check=False,
    )
    crashes = sorted(p.name for p in artifacts.iterdir())
    assert done.returncode == 0, (crashes, done.stderr[-3000:])
    assert crashes == []
    assert "DONE" in done.stderr
