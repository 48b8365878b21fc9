# Tongban local platform. `make run` for the live demo, `make test` for the test suite.
# Longer logic lives in infra/scripts/; every step is idempotent and skips work already done.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PY      := .venv/bin/python
SCRIPTS := infra/scripts

.PHONY: help setup venv protos kafka-jars ferretdb pii-key grpc-certs kafka-secrets kafka-rotate up down status \
        topics topics-plan acl-matrix run demo test lint clean-data chromium report chaos \
        cluster cluster-down cluster-test promtool alerts-check

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

# ------------------------------------------------------------------------------ setup
setup: venv protos kafka-jars ferretdb pii-key grpc-certs kafka-secrets chromium promtool ## venv, gRPC stubs, Kafka jars, FerretDB binary, personal-data keys, gRPC certificates, Kafka secrets, Chromium, promtool

venv: .venv/.tongban-installed
.venv/.tongban-installed: requirements.txt requirements.lock pyproject.toml
	$(SCRIPTS)/setup-venv.sh

protos: venv ## compile services/*/*.proto (generated files are git-ignored)
	$(SCRIPTS)/protos.sh

kafka-jars: var/kafka/libs/.tongban-stamp
var/kafka/libs/.tongban-stamp: infra/pom.xml
	$(SCRIPTS)/kafka-jars.sh

pii-key: venv ## a personal-data key per party in var/pii/ (python -m tongban.ops.pii keys; adds only what is missing)
	$(PY) -m tongban.ops.pii keys

grpc-certs: venv ## local gRPC CA, server and caller certificates in var/tls/grpc (renews what expires)
	$(PY) -m tongban.ops.certs setup

chromium: ## Debian's Chromium (/usr/bin/chromium) for the report's browser test
	$(SCRIPTS)/chromium.sh

promtool: ## Prometheus's rule checker into var/bin/promtool (from Debian's prometheus package, not installed)
	$(SCRIPTS)/promtool.sh

alerts-check: promtool ## promtool check and test rules on infra/alerts (the Prometheus alert rules)
	cd infra/alerts && ../../var/bin/promtool check rules tongban.rules.yml && ../../var/bin/promtool test rules tongban.rules.test.yml

kafka-secrets: venv ## a Kafka secret per principal in var/kafka/principals.secrets (mode 600; adds only what is missing)
	$(PY) -m tongban.ops principals init

kafka-rotate: venv ## NAME=<principal>: a new Kafka secret, on the broker and in the secrets file
	$(PY) -m tongban.ops principals rotate $(NAME)

ferretdb: ## FerretDB v1.24.2 into var/bin/ferretdb (built from the Go module)
	$(SCRIPTS)/build-ferretdb.sh

# ------------------------------------------------------------------------------ platform
up: setup ## start Kafka (127.0.0.1:19092) and FerretDB (127.0.0.1:27217), wait until ready
	$(SCRIPTS)/platform.sh up

down: ## stop them (SIGTERM, then SIGKILL after a grace period)
	$(SCRIPTS)/platform.sh down

status: ## show what is running
	$(SCRIPTS)/platform.sh status

topics: up ## apply infra/topics.toml: topics (never deleted), SCRAM users, ACLs, quotas (undeclared rights revoked)
	$(PY) -m tongban.ops apply

topics-plan: venv ## show differences between infra/topics.toml and the broker (topics, users, ACLs, quotas)
	$(PY) -m tongban.ops plan

acl-matrix: setup ## every pair of declared partners: cross reads and writes denied, own traffic works
	TONGBAN_ACL_MATRIX=all $(SCRIPTS)/run-tests.sh tests/integration/test_acls.py

cluster: venv kafka-jars kafka-secrets ## a local three-broker KRaft cluster (brokers 127.0.0.1:29292-29294, 3 controllers; data in var/cluster)
	$(SCRIPTS)/cluster.sh start

cluster-down: ## stop the three-broker cluster
	$(SCRIPTS)/cluster.sh stop

cluster-test: venv kafka-jars kafka-secrets ferretdb ## brokers killed mid-flow on the cluster (started and stopped if not running); docs/cluster.md
	$(SCRIPTS)/cluster.sh test

clean-data: down ## stop and delete the local broker, store and service state (var/kafka/data, var/ferretdb, var/state)
	rm -rf var/kafka/data var/ferretdb var/state

# ------------------------------------------------------------------------------ use
run: topics ## setup, up, topics, then the live demo
	$(PY) -m devtools.demo --live

demo: topics ## setup, up, topics, then the scripted demo; exits with its code
	$(PY) -m devtools.demo

report: venv ## the supervision report from the feedback topics (after make demo): terminal tables and var/report/supervision.html
	$(PY) -m devtools.report

chaos: setup ## the reliability proof (< 1 h): 10,000 applications, two instances per service, kills, broker and store outages, bad input; on a broker and store of its own; var/chaos/latest.json, docs/reliability.md
	$(PY) -m devtools.chaos --applications $(or $(APPLICATIONS),10000)

bench: topics ## throughput, latency, restore, idle CPU, memory (< 15 min); var/bench/latest.json, docs/benchmarks.md
	$(PY) -m devtools.bench

test: setup ## run all tests, starting (and afterwards stopping) broker/store if needed
	$(SCRIPTS)/run-tests.sh

lint: venv protos ## ruff and mypy (mypy reads the generated gRPC stubs)
	$(PY) -m ruff check .
	$(PY) -m mypy tongban services sim

mutate: venv protos pii-key grpc-certs ## mutation testing (mutmut) of the rules and runtime against tests/unit; writes var/mutate/latest.json
	$(PY) infra/scripts/mutate.py

.PHONY: partner-java
partner-java: ## the partner kit's Java example (docs/partner-kit/java): target/tongban-partner.jar, offline when Maven's local repository has its jars
	cd docs/partner-kit/java && (mvn -q -B -o package || mvn -q -B package)
