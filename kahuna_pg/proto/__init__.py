"""The Python modules generated from proto/kahuna.proto by grpcio-tools, checked in.

`kahuna_pb2` holds the messages and enums, `kahuna_pb2_grpc` the `Sequencer` stub and servicer.
They are generated with the proto mapped to the virtual path `kahuna_pg/proto/kahuna.proto`, so
that `kahuna_pb2_grpc` imports `kahuna_pb2` from this package instead of as a top-level module.
Regenerate them after any change to the proto with `python -m kahuna_pg.proto` from a checkout;
tests/test_grpc_generated.py fails while the checked-in modules differ from a regeneration.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: proto/ is not shipped in the wheel
PROTO_FILE = ROOT / "proto" / "kahuna.proto"
PACKAGE_DIR = "kahuna_pg/proto"  # the virtual path of the proto, and so of the generated modules
GENERATED = ("kahuna_pb2.py", "kahuna_pb2.pyi", "kahuna_pb2_grpc.py")


def generate(out_root: Path = ROOT) -> list[Path]:
    """Run grpc_tools.protoc on proto/kahuna.proto; the modules land in out_root/kahuna_pg/proto/."""
    from grpc_tools import protoc  # a build tool: imported only when generating

    if not PROTO_FILE.exists():
        raise FileNotFoundError(f"{PROTO_FILE} not found: generate from a checkout of kahuna-pg")
    out = str(out_root)
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PACKAGE_DIR}={PROTO_FILE.parent}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_FILE),
        ]
    )
    if status != 0:
        raise RuntimeError(f"grpc_tools.protoc failed with status {status}")
    return [out_root / PACKAGE_DIR / name for name in GENERATED]
