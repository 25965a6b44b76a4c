"""The checked-in gRPC modules are exactly what grpcio-tools makes of proto/kahuna.proto."""

from __future__ import annotations

from pathlib import Path

from kahuna_pg import proto
from kahuna_pg.proto import kahuna_pb2


def test_checked_in_modules_match_a_regeneration(tmp_path: Path) -> None:
    fresh = proto.generate(tmp_path)
    stale = [
        path.name for path in fresh if path.read_bytes() != (proto.ROOT / proto.PACKAGE_DIR / path.name).read_bytes()
    ]
    assert not stale, f"{', '.join(stale)} differ from proto/kahuna.proto: run `python -m kahuna_pg.proto`"


def test_the_service_is_kahunas_without_a_package() -> None:
    assert kahuna_pb2.DESCRIPTOR.package == ""
    assert kahuna_pb2.DESCRIPTOR.services_by_name["Sequencer"].full_name == "Sequencer"
    assert kahuna_pb2.SEQUENCE_EPHEMERAL == 2
