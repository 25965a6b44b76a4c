"""kahuna-pg: Kahuna's sequence API with every rule inside PostgreSQL."""

from kahuna_pg.schema import installed_version, latest_version, migrate

__all__ = ["installed_version", "latest_version", "migrate"]
