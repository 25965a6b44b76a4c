"""`kahuna-pg serve` with no DSN: the embedded PostgreSQL under --data-dir.

It creates the cluster on first use, listens on a Unix socket only, stops it on SIGTERM
(exit 0), and a second start on the same directory continues after the last value.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

import psycopg
from rest_support import Api, ServeProcess

from kahuna_pg.embedded import EmbeddedPostgres


def test_embedded_default_survives_a_restart() -> None:
    # mkdtemp's directory sits directly in /tmp, so the `postgres` user (when we are root)
    # can reach it once EmbeddedPostgres hands it over.
    data_dir = Path(tempfile.mkdtemp(prefix="kahuna-pg-embedded-"))
    cluster = EmbeddedPostgres(data_dir)
    try:
        first = ServeProcess("--data-dir", str(data_dir)).wait_ready()
        try:
            api = Api(first.base)
            assert api.call("create", name="orders")["type"] == "Success"
            assert api.call("next", name="orders")["allocation"]["start"] == 1
            assert api.call("reserve", name="orders", count=10, idempotencyKey="batch")["allocation"]["end"] == 11
            assert api.request("GET", "/readyz").status == 200
            # Unix socket only: no TCP port.
            with psycopg.connect(cluster.conninfo("kahuna")) as conn:
                assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
                assert conn.info.host.startswith(str(data_dir))
        finally:
            code = first.signal(signal.SIGTERM)
        first_log = first.log()
        first.close()
        assert code == 0, first_log
        assert "embedded" in first_log and str(data_dir) in first_log
        assert not cluster.running(), "the embedded PostgreSQL must stop with the service"

        second = ServeProcess("--data-dir", str(data_dir)).wait_ready()
        try:
            api = Api(second.base)
            assert api.call("next", name="orders")["allocation"]["start"] == 12
            replay = api.call("reserve", name="orders", count=10, idempotencyKey="batch")
            assert replay["allocation"]["start"] == 2 and replay["revision"] == 2
            assert api.get("orders")["sequence"]["currentValue"] == 12
        finally:
            code = second.signal(signal.SIGTERM)
        second_log = second.log()
        second.close()
        assert code == 0, second_log
        assert "creating embedded" in first_log and "creating embedded" not in second_log
        assert not cluster.running()
    finally:
        if cluster.running():
            cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
