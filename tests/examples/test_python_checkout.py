"""examples/python_checkout.py against a real server, as its docstring runs it, with a
checkout caller that may tokenize and reveal (and nothing else)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python_checkout.py"


def test_python_checkout_tokenizes_and_reveals_for_a_refund(server):
    key = server.add_caller("py-checkout", "tokenize,detokenize")
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), server.address, key],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"order o-1001 stored with card \*{12}4242 \(\d{12}4242\)", lines[0])
    assert lines[1] == "refund to card ending 4242"
    assert "4242424242424242" not in result.stdout
