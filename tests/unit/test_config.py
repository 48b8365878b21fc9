"""Configuration is read once and refused up front with a message naming the variable."""

import pytest

from tongban.config import ConfigError, load_settings
from tongban.pii import new_key_line

KEY = {"TONGBAN_PII_KEYS": new_key_line()}


def test_defaults_name_the_local_platform_and_namespace_everything(tmp_path):
    secrets = tmp_path / "principals.secrets"
    secrets.write_text("tongban-routing=s1\n")
    settings = load_settings("routing", {**KEY, "TONGBAN_NAMESPACE": "t1-", "TONGBAN_KAFKA_SECRETS_FILE": str(secrets)})
    assert settings.kafka_client_options() == {
        "bootstrap_servers": "127.0.0.1:19092", "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "tongban-routing", "sasl_plain_password": "s1"}
    plain = load_settings("routing", {**KEY, "TONGBAN_KAFKA_SECURITY": "PLAINTEXT"})  # an external cluster
    assert plain.kafka_client_options() == {"bootstrap_servers": "127.0.0.1:19092"}
    assert settings.mongo_uri == "mongodb://127.0.0.1:27217/"
    assert (settings.topic("tongban.application.routed"), settings.group, settings.database) == (
        "t1-tongban.application.routed", "t1-tongban-routing", "t1_tongban_routing")
    assert settings.dlq_topic == "t1-tongban.dlq.tongban-routing"
    assert settings.grpc_port == 50052


@pytest.mark.parametrize(("env", "variable"), [
    ({"TONGBAN_CRASH_POINT": "after_lunch"}, "TONGBAN_CRASH_POINT"),
    ({"TONGBAN_NAMESPACE": "Bad.Name"}, "TONGBAN_NAMESPACE"),
    ({"TONGBAN_GRPC_PORT_INTAKE": "fifty"}, "TONGBAN_GRPC_PORT_INTAKE"),
    ({"TONGBAN_KAFKA_SECURITY": "KERBEROS"}, "TONGBAN_KAFKA_SECURITY"),
])
def test_bad_settings_are_refused_naming_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        load_settings("intake", {**KEY, **env})


# feedback holds no personal-data key: these identity tests need no key files from make setup
def test_a_kafka_identity_without_a_secret_is_refused_naming_the_variables():
    env = {**KEY, "TONGBAN_KAFKA_SECURITY": "SASL_SSL", "TONGBAN_KAFKA_SECRETS_FILE": "/nonexistent"}
    with pytest.raises(ConfigError, match="TONGBAN_KAFKA_PASSWORD"):
        load_settings("feedback", env).kafka_client_options()


def test_each_process_has_its_own_kafka_identity_from_the_secrets_file(tmp_path):
    secrets = tmp_path / "principals.secrets"
    secrets.write_text("# comment\nadmin=a1\ntongban-feedback=s1\npartner-420000=p1\n")
    env = {**KEY, "TONGBAN_KAFKA_SECURITY": "SASL_PLAINTEXT", "TONGBAN_KAFKA_SECRETS_FILE": str(secrets)}
    options = load_settings("feedback", env).kafka_client_options()
    assert (options["security_protocol"], options["sasl_mechanism"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("tongban-feedback", "s1")
    assert "ssl_context" not in options
    tool = load_settings("ops", env, local_defaults=True)
    assert (tool.kafka_bootstrap, tool.sasl_username, tool.sasl_password) == ("127.0.0.1:19092", "admin", "a1")
    partner = load_settings("partner-sim", env).as_principal("partner-420000")
    assert partner.kafka_client_options()["sasl_plain_username"] == "partner-420000"
    assert partner.kafka_client_options()["sasl_plain_password"] == "p1"
    explicit = load_settings("feedback", {**env, "TONGBAN_KAFKA_USERNAME": "u", "TONGBAN_KAFKA_PASSWORD": "pw"})
    assert (explicit.sasl_username, explicit.sasl_password) == ("u", "pw")
    with pytest.raises(ConfigError, match="partner-999999"):
        load_settings("partner-sim", env).as_principal("partner-999999").kafka_client_options()
    with pytest.raises(ConfigError, match="tongban-routing"):  # services call this before they start
        load_settings("routing", env).kafka_client_options()


def test_operator_tools_use_the_brokers_admin_and_the_local_ca_but_services_do_not(tmp_path):
    secrets = tmp_path / "principals.secrets"
    secrets.write_text("admin=a1\ntongban-feedback=s1\n")
    env = {**KEY, "TONGBAN_KAFKA_SECURITY": "SASL_SSL", "TONGBAN_KAFKA_SECRETS_FILE": str(secrets)}
    tool = load_settings("ops", env, local_defaults=True)
    assert (tool.kafka_bootstrap, tool.sasl_username) == ("127.0.0.1:19094", "admin")
    assert tool.ssl_cafile.endswith("var/kafka/tls/ca.pem")
    service = load_settings("feedback", env)
    assert (service.sasl_username, service.ssl_cafile) == ("tongban-feedback", None)
