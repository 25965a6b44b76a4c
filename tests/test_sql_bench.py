"""The SQL benchmark's own logic: its cases, its pgbench scripts, its arguments and its report.

Nothing here runs pgbench or measures anything: the benchmark is run by hand
(`.venv/bin/python benchmarks/sql_bench.py`), and these tests only keep it runnable.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sql_bench", BENCHMARKS / "sql_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sql_bench"] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


PGBENCH_15_OUTPUT = """\
transaction type: benchmarks/pgbench/next_no_key.sql
scaling factor: 1
query mode: prepared
number of clients: 16
number of threads: 4
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 35712
number of failed transactions: 0 (0.000%)
latency average = 4.480 ms
initial connection time = 20.718 ms
tps = 3571.443201 (without initial connection time)
"""


def test_every_case_has_its_pgbench_script_and_the_reference_is_a_case(bench: ModuleType) -> None:
    keys = [case.key for case in bench.CASES]
    assert len(set(keys)) == len(keys)
    assert bench.REFERENCE in keys
    for key in keys:
        script = (BENCHMARKS / "pgbench" / f"{key}.sql").read_text()
        assert ":nseq" in script, key  # every case runs on one hot sequence and on many
    for key, _, _, _ in bench.TARGETS:
        assert key in keys


def test_the_output_of_pgbench_is_read(bench: ModuleType) -> None:
    tps = bench._TPS.search(PGBENCH_15_OUTPUT)
    latency = bench._LATENCY.search(PGBENCH_15_OUTPUT)
    assert tps and float(tps[1]) == pytest.approx(3571.443201)
    assert latency and float(latency[1]) == pytest.approx(4.48)


def test_arguments(bench: ModuleType, tmp_path: Path) -> None:
    args = bench.parse_args([])
    assert (args.duration, args.clients, args.sequences) == (10, [1, 16, 64], [1, 1000])
    assert [case.key for case in args.case_list] == [case.key for case in bench.CASES]
    patch = tmp_path / "patch.sql"
    patch.write_text("SELECT 1;\n")
    args = bench.parse_args(
        ["-T", "3", "--clients", "2,8", "--cases", "plain_update,next_no_key", "--variant", f"v={patch}+{patch}"]
    )
    assert args.duration == 3 and args.clients == [2, 8]
    assert [case.key for case in args.case_list] == ["next_no_key", "plain_update"]  # in the table's order
    assert args.variants == [bench.Variant("v", (patch, patch))]
    assert args.variants[0].database == "variant_v"
    for wrong in (["--cases", "nope"], ["--variant", "no-file"], ["--variant", f"x={tmp_path}/absent.sql"]):
        with pytest.raises(SystemExit):
            bench.parse_args(wrong)


def test_the_table_gives_the_ratio_to_the_plain_update_of_the_same_group(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {}
    for case, database, sequences, clients, tps in [
        ("plain_update", "bench", 1, 1, [1000.0]),
        ("next_no_key", "bench", 1, 1, [900.0]),
        ("next_no_key", "variant_v", 1, 1, [1200.0, 1100.0, 1300.0]),
        ("plain_update", "bench", 1, 64, [2000.0]),
        ("next_no_key", "bench", 1, 64, [3000.0]),
    ]:
        results[(case, database, sequences, clients)] = bench.Result(case, database, sequences, clients, tps=tps)
    results[("next_fresh_key", "bench", 1, 1)] = bench.Result("next_fresh_key", "bench", 1, 1, error="aborted")
    cases = [c for c in bench.CASES if c.key in ("next_no_key", "next_fresh_key", "plain_update")]
    bench.print_table(results, cases, {"bench": None, "variant_v": "v"}, [1], [1, 64])
    bench.print_targets(results, [1, 64])
    out = capsys.readouterr().out
    lines = {line.strip().split("  ")[0]: line for line in out.splitlines()}
    assert "900   0.90x" in lines["kahuna_next, no key"]
    assert "3000   1.50x" in lines["kahuna_next, no key"]
    assert "1200   1.20x" in lines["v: kahuna_next, no key"]  # the median of the rounds
    assert "failed" in lines["kahuna_next, fresh key"]
    assert "1000   1.00x" in lines["floor: plain UPDATE"]
    assert "1 client(s): 0.90x, target >= 0.9x: met" in out
    assert "64 client(s): 1.50x, target >= 1.0x: met" in out
