"""The suite's own PostgreSQL and Redis answer, and each test's database starts empty: the
cloud tier's storage and job-queue tests rest on these fixtures."""

import psycopg
import redis


def test_postgres_answers(postgres_url):
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_each_postgres_url_is_a_database_of_its_own(postgres_server, postgres_url):
    other_url = postgres_server.create_database(postgres_url.rsplit("/", 1)[1] + "_other")
    assert other_url != postgres_url
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE readings (value double precision)")
    with psycopg.connect(other_url) as conn:
        assert conn.execute("SELECT to_regclass('readings')").fetchone() == (None,)


def test_postgres_is_not_the_machines(postgres_server):
    assert postgres_server.port != 5432


def test_redis_answers(redis_server):
    assert redis_server.url.startswith("redis://127.0.0.1:")
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping()
        client.set("pump-1:flow", b"12.5")
        assert client.get("pump-1:flow") == b"12.5"
    finally:
        client.close()
