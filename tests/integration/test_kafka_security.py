"""Kafka as production runs it, against a real peer: every client of a service speaks TLS and
verifies the cluster's CA, and authenticates with SASL SCRAM-SHA-512 when told to. The peer
is a TLS and SCRAM front (secure_front.py) before the embedded broker, which advertises the
front's port, so that no client reaches the broker except through it."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dunwell import devstack
from shared import topics
from shared.kafka import ensure_topics, make_producer, prepare_broker
from shared.settings import KafkaSettings
from tests.integration.secure_front import SecureFront

USER, PASSWORD = "dunwell-reminder", "a-password-for-the-test"


@dataclass(frozen=True)
class ClusterCA:
    ca: Path  # what clients trust
    cert: Path  # the front's certificate for 127.0.0.1, signed by the CA
    key: Path


def issue_cluster_ca(folder: Path, name: str = "test cluster ca") -> ClusterCA:
    """A CA and a server certificate it signed, as Strimzi's cluster CA would issue."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])

    def build(subject: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                .public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=1))
                .not_valid_after(now + dt.timedelta(hours=1)))

    ca = build(ca_name, ca_key.public_key()).add_extension(
        x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256())
    server = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
                   key.public_key()).add_extension(x509.SubjectAlternativeName(
                       [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
                   ).sign(ca_key, hashes.SHA256())
    files = ClusterCA(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


@dataclass
class SecureCluster:
    front: SecureFront
    ca: ClusterCA

    def settings(self, **changes: Any) -> KafkaSettings:
        options: dict[str, Any] = {"security_protocol": "SSL", "ssl_cafile": self.ca.ca}
        return KafkaSettings(bootstrap=f"127.0.0.1:{self.front.port}", partitions=2,
                             **{**options, **changes})

    def scram(self, password: str = PASSWORD,
              mechanism: str = "SCRAM-SHA-512") -> KafkaSettings:
        return self.settings(security_protocol="SASL_SSL", sasl_mechanism=mechanism,
                             sasl_username=USER, sasl_password=password)


@asynccontextmanager
async def secure_cluster(folder: Path,
                         users: dict[str, str] | None = None) -> AsyncIterator[SecureCluster]:
    """Tansu on one loopback port, advertising the front's port, and the front before it."""
    ca = issue_cluster_ca(folder / "tls")
    front_port = devstack.free_port()
    broker_port = devstack.free_port()
    while broker_port == front_port:
        broker_port = devstack.free_port()
    broker = devstack.start_broker(broker_port, folder / "logs", advertised_port=front_port)
    front = SecureFront(front_port, broker_port, ca.cert, ca.key, users)
    try:
        await front.start()
        yield SecureCluster(front, ca)
    finally:
        await front.stop()
        broker.stop()


@pytest.fixture
async def tls_cluster(tmp_path: Path) -> AsyncIterator[SecureCluster]:
    async with secure_cluster(tmp_path) as cluster:
        yield cluster


@pytest.fixture
async def scram_cluster(tmp_path: Path) -> AsyncIterator[SecureCluster]:
    async with secure_cluster(tmp_path, users={USER: PASSWORD}) as cluster:
        yield cluster


async def round_trip(settings: KafkaSettings, value: bytes) -> list[bytes]:
    """Topics made by the admin client, one record sent with acks=all, read back by a member
    of a consumer group: the three kinds of client a service has."""
    await prepare_broker(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topics.CASES, value, key=b"one-partition")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topics.CASES, group_id="security-test",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **settings.consumer_options())
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                found = [bytes(r.value or b"") for rs in batches.values() for r in rs]
                if found:
                    return found
    finally:
        await consumer.stop()


async def refused(settings: KafkaSettings) -> float:
    """Starting a producer fails with a KafkaError; returns how long it took to fail."""
    producer = make_producer(settings)
    started = time.monotonic()
    try:
        with pytest.raises(KafkaError):
            await asyncio.wait_for(producer.start(), 2 * settings.call_timeout_seconds)
        return time.monotonic() - started
    finally:
        await producer.stop()


async def test_over_tls_topics_are_made_and_a_record_goes_round(
        tls_cluster: SecureCluster) -> None:
    settings = tls_cluster.settings()
    assert await round_trip(settings, b"over tls") == [b"over tls"]
    # Bootstrap, the advertised broker and the group coordinator: all through the front.
    assert tls_cluster.front.upstream_connections >= 2


async def test_a_front_whose_certificate_the_ca_did_not_sign_is_refused(
        tls_cluster: SecureCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    other = issue_cluster_ca(tmp_path / "other-ca", name="another cluster ca")
    settings = tls_cluster.settings(ssl_cafile=other.ca)
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        await refused(settings)
        with pytest.raises(KafkaError):
            await ensure_topics(settings, attempts=1)  # the admin client too
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert tls_cluster.front.upstream_connections == 0, "a request reached the broker"


async def test_with_scram_sha_512_the_round_trip_is_made_by_an_authenticated_user(
        scram_cluster: SecureCluster) -> None:
    assert await round_trip(scram_cluster.scram(), b"over sasl") == [b"over sasl"]
    front = scram_cluster.front
    assert front.failed == []
    assert len(front.sessions) >= 2 and set(front.sessions) == {USER}
    assert front.upstream_connections == len(front.sessions)


async def test_a_wrong_password_is_refused_within_the_call_timeout(
        scram_cluster: SecureCluster, caplog: pytest.LogCaptureFixture) -> None:
    settings = scram_cluster.scram(password="not-the-password")
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        took = await refused(settings)
    assert took < settings.call_timeout_seconds
    assert "[Error 58] SaslAuthenticationFailed" in caplog.text
    assert scram_cluster.front.sessions == []
    assert scram_cluster.front.failed == ["authentication"]


async def test_a_mechanism_the_cluster_does_not_offer_is_refused(
        scram_cluster: SecureCluster, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        await refused(scram_cluster.scram(mechanism="SCRAM-SHA-256"))
    assert "[Error 33] UnsupportedSaslMechanism" in caplog.text
    assert scram_cluster.front.failed == ["mechanism SCRAM-SHA-256"]


async def test_a_client_that_skips_sasl_is_cut_off_after_api_versions(
        scram_cluster: SecureCluster) -> None:
    await refused(scram_cluster.settings())  # TLS, but no SASL
    assert scram_cluster.front.sessions == []
    assert scram_cluster.front.failed == ["api key 3 before authentication"]  # Metadata


async def test_a_service_started_with_sasl_ssl_settings_consumes_through_the_front(
        scram_cluster: SecureCluster, tmp_path: Path) -> None:
    """The reminder service, a real process configured from the environment alone: ready
    means its consumer is in its group and going round, every connection authenticated."""
    port = devstack.free_port()
    bootstrap = f"127.0.0.1:{scram_cluster.front.port}"
    env = devstack.service_env("reminder", port, tmp_path / "var", bootstrap, {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": USER, "KAFKA_SASL_PASSWORD": PASSWORD,
        "KAFKA_SSL_CAFILE": str(scram_cluster.ca.ca), "KAFKA_PARTITIONS": "2"})
    url = f"http://127.0.0.1:{port}"
    reminder = devstack.start_service("reminder", env, tmp_path / "logs")
    try:
        # The front serves on this loop: wait in a thread.
        await asyncio.to_thread(devstack.wait_ready, url, reminder)
        async with httpx.AsyncClient() as client:
            checks = (await client.get(f"{url}/readyz")).json()["checks"]
    finally:
        await asyncio.to_thread(reminder.stop)
    assert checks["consumer"] is True and checks["broker"] is True
    front = scram_cluster.front
    assert front.failed == [] and len(front.sessions) >= 3 and set(front.sessions) == {USER}
    assert PASSWORD not in reminder.log_path.read_text(errors="replace")
