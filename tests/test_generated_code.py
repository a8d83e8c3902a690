"""The committed protobuf code is exactly what protoc makes from proto/ (never hand-edited).

Regenerates with the pinned grpcio-tools, the way `make proto` does, into a temporary
directory and compares byte for byte: a changed .proto without `make proto`, a hand edit,
a stale or stray file, or another protoc version all fail here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "proto"
PACKAGE = Path("vault") / "v1"
COMMITTED = REPO / "src" / PACKAGE
# protoc's outputs for each .proto: --python_out, --pyi_out, --grpc_python_out.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
# Hand-written files that live beside the generated ones.
HAND_WRITTEN = {"__init__.py", "py.typed"}


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("generated")
    protos = sorted(p.relative_to(REPO).as_posix() for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    assert protos, "no .proto files found"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return _files(out / PACKAGE)


def test_every_proto_yields_its_three_outputs(regenerated):
    stems = sorted(p.stem for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    expected = {f"{stem}{suffix}" for stem in stems for suffix in GENERATED_SUFFIXES}
    assert set(regenerated) == expected


def test_no_generated_file_is_missing_or_extra(regenerated):
    committed = {name for name in _files(COMMITTED) if name not in HAND_WRITTEN}
    missing = sorted(set(regenerated) - committed)
    extra = sorted(committed - set(regenerated))
    assert missing == [], f"generated but not committed (run `make proto`): {missing}"
    assert extra == [], f"committed but not generated from proto/ (stale?): {extra}"


def test_committed_code_is_byte_identical_to_regenerated(regenerated):
    committed = _files(COMMITTED)
    differing = sorted(
        name for name, data in regenerated.items() if name in committed and committed[name] != data
    )
    assert differing == [], f"differs from protoc's output (run `make proto`): {differing}"
