from kahuna_pg import installed_version, latest_version


def test_schema_is_installed_at_latest(db):
    assert installed_version(db) == latest_version()
    assert db.execute("SELECT (kahuna_create('orders')).name").fetchone() == ("orders",)
    assert db.execute("SELECT kahuna_next('orders', 'request-123')").fetchone() == (1,)
