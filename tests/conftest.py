"""Fixtures every tier may use: one throwaway PostgreSQL cluster for the whole run, started the
first time a test asks for it, and a fresh database of it per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests import pg

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.Cluster]:
    if not pg.available():
        pytest.fail(f"PostgreSQL 15 server binaries are missing from {pg.BIN}: "
                    "`make test` installs Debian's postgresql-15 (or set DUNWELL_PG_BIN)")
    cluster = pg.Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_database(postgres: pg.Cluster) -> str:
    """A new, empty database's name."""
    name = f"t{next(_numbers)}"
    postgres.create_database(name)
    return name
