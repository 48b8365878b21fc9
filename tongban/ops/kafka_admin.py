"""confluent-kafka's AdminClient (ACLs, SCRAM credentials) and aiokafka options for the
operator tools, from the same TONGBAN_KAFKA_* settings as every other client.

Operator tools run as the broker's `admin` unless TONGBAN_KAFKA_USERNAME/_PASSWORD say
otherwise (see tongban.config.load_settings, `local_defaults`)."""

from __future__ import annotations

from typing import Any

from tongban.config import Settings, load_settings

TIMEOUT_S = 30.0


def ops_settings(bootstrap: str | None = None) -> Settings:
    settings = load_settings("ops", local_defaults=True)
    if bootstrap:
        from dataclasses import replace

        settings = replace(settings, kafka_bootstrap=bootstrap)
    return settings


def confluent_config(settings: Settings, client_id: str = "tongban-ops") -> dict[str, Any]:
    """librdkafka configuration for the identity in `settings`."""
    settings.kafka_client_options()  # refuses a SASL identity without a secret, naming the variables
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap, "client.id": client_id,
                              "log_level": 4}  # librdkafka: warnings and worse
    if settings.kafka_security != "PLAINTEXT":
        config.update({
            "security.protocol": settings.kafka_security,
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": settings.sasl_username,
            "sasl.password": settings.sasl_password,
        })
    if settings.kafka_security == "SASL_SSL" and settings.ssl_cafile:
        config["ssl.ca.location"] = settings.ssl_cafile
    return config


def admin_client(settings: Settings | None = None):
    from confluent_kafka.admin import AdminClient

    return AdminClient(confluent_config(settings or ops_settings()))
