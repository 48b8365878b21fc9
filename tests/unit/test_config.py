"""Configuration is read once and refused up front with a message naming the variable."""

import pytest

from tongban.config import ConfigError, load_settings
from tongban.pii import new_key_line

KEY = {"TONGBAN_PII_KEYS": new_key_line()}


def test_defaults_name_the_local_platform_and_namespace_everything():
    settings = load_settings("routing", {**KEY, "TONGBAN_NAMESPACE": "t1-"})
    assert settings.kafka_client_options() == {"bootstrap_servers": "127.0.0.1:19092"}
    assert settings.mongo_uri == "mongodb://127.0.0.1:27217/"
    assert (settings.topic("tongban.application.routed"), settings.group, settings.database) == (
        "t1-tongban.application.routed", "t1-tongban-routing", "t1_tongban_routing")
    assert settings.dlq_topic == "t1-tongban.dlq.tongban-routing"
    assert settings.grpc_port == 50052


@pytest.mark.parametrize("env, variable", [
    ({"TONGBAN_CRASH_POINT": "after_lunch"}, "TONGBAN_CRASH_POINT"),
    ({"TONGBAN_NAMESPACE": "Bad.Name"}, "TONGBAN_NAMESPACE"),
    ({"TONGBAN_GRPC_PORT_INTAKE": "fifty"}, "TONGBAN_GRPC_PORT_INTAKE"),
    ({"TONGBAN_KAFKA_SECURITY": "SASL_SSL"}, "TONGBAN_KAFKA_USERNAME"),
    ({"TONGBAN_KAFKA_SECURITY": "KERBEROS"}, "TONGBAN_KAFKA_SECURITY"),
])
def test_bad_settings_are_refused_naming_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        load_settings("intake", {**KEY, **env})


def test_operator_tools_may_use_the_local_brokers_identity_but_services_may_not():
    env = {**KEY, "TONGBAN_KAFKA_SECURITY": "SASL_SSL"}
    tool = load_settings("ops", env, local_defaults=True)
    assert (tool.kafka_bootstrap, tool.sasl_username) == ("127.0.0.1:19094", "tongban")
    with pytest.raises(ConfigError, match="TONGBAN_KAFKA_USERNAME"):
        load_settings("intake", env)
