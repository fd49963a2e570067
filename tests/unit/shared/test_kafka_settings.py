"""Kafka as production runs it: the settings a secured cluster needs reach every client."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from shared.kafka import make_producer
from shared.settings import KafkaSettings


@pytest.fixture
def secured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> KafkaSettings:
    ca = tmp_path / "ca.crt"
    ca.write_text(_self_signed_pem())
    for name, value in {"BOOTSTRAP": "kafka-bootstrap:9093", "SECURITY_PROTOCOL": "SASL_SSL",
                        "SASL_MECHANISM": "SCRAM-SHA-512", "SASL_USERNAME": "reminder",
                        "SASL_PASSWORD": "s3cret", "SSL_CAFILE": str(ca),
                        "REPLICATION_FACTOR": "3", "MIN_INSYNC_REPLICAS": "2"}.items():
        monkeypatch.setenv(f"KAFKA_{name}", value)
    return KafkaSettings()


def _self_signed_pem() -> str:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cluster ca")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_the_default_is_plaintext_on_loopback_with_no_credentials() -> None:
    options = KafkaSettings().client_options()
    assert options["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in options and "sasl_plain_password" not in options
    assert KafkaSettings().topic_configs() == {}


def test_sasl_ssl_reaches_the_producer_the_consumers_and_the_admin_client(
        secured: KafkaSettings) -> None:
    options = secured.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "reminder"
    assert options["sasl_plain_password"] == "s3cret"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # the cluster's CA, not the system's

    async def built() -> None:  # each client accepts them as built (nothing connects yet)
        producer = make_producer(secured)
        assert producer.client._security_protocol == "SASL_SSL"
        assert producer.client._sasl_mechanism == "SCRAM-SHA-512"
        consumer = AIOKafkaConsumer(group_id="g", **secured.consumer_options())
        assert consumer._client._security_protocol == "SASL_SSL"
        admin = AIOKafkaAdminClient(**secured.client_options())
        assert admin._client._security_protocol == "SASL_SSL"
    asyncio.run(built())


def test_the_password_never_shows_in_the_settings_repr(secured: KafkaSettings) -> None:
    assert "s3cret" not in repr(secured) and "s3cret" not in str(secured.model_dump())


def test_topics_are_made_with_min_insync_replicas(secured: KafkaSettings) -> None:
    assert secured.replication_factor == 3
    assert secured.topic_configs() == {"min.insync.replicas": "2"}


@pytest.mark.parametrize(("env", "message"), [
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
    ({"KAFKA_REPLICATION_FACTOR": "1", "KAFKA_MIN_INSYNC_REPLICAS": "2"}, "cannot exceed"),
    ({"KAFKA_SSL_CAFILE": "/etc/hostname"}, "use SSL or SASL_SSL"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/no/such/ca.crt"}, "does not exist"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "/etc/hostname"}, "go together"),
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "security_protocol"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI",
      "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "sasl_mechanism"),
])
def test_incoherent_settings_are_refused_at_start(monkeypatch: pytest.MonkeyPatch,
                                                  env: dict[str, str], message: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        KafkaSettings()
