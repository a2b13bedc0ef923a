"""The monitoring kit against the real thing: promtool on config/prometheus.yml, alerts.yml and
alerts.test.yml; then a real Prometheus, configured from prometheus.yml, scraping a real 4-node
cluster that commits blocks; and every metric and label name in the alerts and the Grafana
dashboard checked against what a running node serves, so a rename cannot silently blank a panel
or mute an alert.

promtool and prometheus come from Debian's prometheus package, installed with apt-get when
missing (tools.ensure_debian_tools); when that is impossible the tests fail, saying why.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.config import DEFAULT_BASE_PORT
from node.testnet import node_ports
from tests.integration.cluster import Cluster, get_text
from tests.ops.tools import (
    CONFIG,
    PrometheusServer,
    ToolInstallError,
    declared_label_names,
    ensure_debian_tools,
    exposed_names,
    poll,
    promql_label_names,
    promql_metric_names,
    running_prometheus,
)

pytestmark = [pytest.mark.ops, pytest.mark.integration]

DASHBOARD = CONFIG / "grafana" / "creditnet-dashboard.json"
TARGET_LABELS = {"job", "instance", "agency"}
"""Labels Prometheus adds from the scrape config (the agency label is ours, in prometheus.yml)."""
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$agency": ".*"}


@pytest.fixture(scope="module")
def prometheus_tools() -> dict[str, str]:
    """Paths of promtool and prometheus (installing Debian's prometheus package if needed)."""
    try:
        return ensure_debian_tools(["promtool", "prometheus"], "prometheus")
    except ToolInstallError as exc:
        pytest.fail(f"the ops tests need promtool and prometheus: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 4-node consortium of real ``creditnet run`` processes, stopped at the end."""
    c = Cluster(tmp_path_factory.mktemp("ops") / "net", 4, seed=time.time_ns(), sent_logs=False)
    try:
        c.start_all()
        yield c
    finally:
        c.close()


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((CONFIG / "alerts.yml").read_text("utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in the dashboard, variables included."""
    doc = json.loads(DASHBOARD.read_text("utf-8"))
    out = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            assert inner, f"variable {var['name']}: unexpected query {query!r}"
            out.append((f"variable {var['name']}", inner.group(1)))
    return out


def with_variables(expr: str) -> str:
    """``expr`` with Grafana's variables replaced by values Prometheus itself accepts."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def promtool(tools: dict[str, str], *args: str) -> None:
    out = subprocess.run(
        [tools["promtool"], *args],
        cwd=CONFIG,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}\n{out.stderr}"


def test_promtool_accepts_the_config_and_rules_and_the_rule_tests_pass(
    prometheus_tools: dict[str, str],
) -> None:
    promtool(prometheus_tools, "check", "config", "prometheus.yml")
    promtool(prometheus_tools, "check", "config", "prometheus.compose.yml")
    promtool(prometheus_tools, "check", "rules", "alerts.yml")
    promtool(prometheus_tools, "test", "rules", "alerts.test.yml")


def test_every_alert_has_a_firing_and_a_quiet_rule_test() -> None:
    tests = yaml.safe_load((CONFIG / "alerts.test.yml").read_text("utf-8"))["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for case in test["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_the_devnet_scrape_config_targets_every_devnet_node() -> None:
    doc = yaml.safe_load((CONFIG / "prometheus.yml").read_text("utf-8"))
    assert doc["rule_files"] == ["alerts.yml"]
    (job,) = doc["scrape_configs"]
    assert job["job_name"] == "creditnet" and job["metrics_path"] == "/metrics"
    got = [(sc["targets"], sc["labels"]["agency"]) for sc in job["static_configs"]]
    want = [([f"127.0.0.1:{node_ports(i, DEFAULT_BASE_PORT)[2]}"], f"agency-{i}") for i in range(4)]
    assert got == want


def test_the_compose_scrape_config_differs_only_in_its_targets() -> None:
    devnet = yaml.safe_load((CONFIG / "prometheus.yml").read_text("utf-8"))
    compose = yaml.safe_load((CONFIG / "prometheus.compose.yml").read_text("utf-8"))
    for i, sc in enumerate(compose["scrape_configs"][0]["static_configs"]):
        assert sc["targets"] == [f"agency-{i}:{node_ports(i, DEFAULT_BASE_PORT)[2]}"]
        sc["targets"] = devnet["scrape_configs"][0]["static_configs"][i]["targets"]
    del compose["global"]["external_labels"], devnet["global"]["external_labels"]
    assert compose == devnet


def scrape_config_for(cluster: Cluster, workdir: Path) -> Path:
    """config/prometheus.yml with the cluster's metrics addresses as targets (matched by the
    devnet port layout), 1 s intervals, and the rule files by absolute path."""
    doc = yaml.safe_load((CONFIG / "prometheus.yml").read_text("utf-8"))
    doc["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    doc["rule_files"] = [str(CONFIG / name) for name in doc["rule_files"]]
    devnet_ports = [node_ports(i, DEFAULT_BASE_PORT)[2] for i in range(len(cluster.nodes))]
    for sc in doc["scrape_configs"][0]["static_configs"]:
        (target,) = sc["targets"]
        index = devnet_ports.index(int(target.rpartition(":")[2]))
        sc["targets"] = [cluster.nodes[index].metrics.split("//")[1].split("/")[0]]
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def scraped_heights(prom: PrometheusServer) -> dict[str, float]:
    return {
        r["metric"]["agency"]: float(r["value"][1])
        for r in prom.query('creditnet_consensus_height{job="creditnet"}')
    }


def commit_blocks(cluster: Cluster, rounds: int) -> int:
    """Submit ``rounds`` batches (each through another node, waited on until committed); the
    committed height they reach on every node."""
    for r in range(rounds):
        node = r % len(cluster.nodes)
        code, body = cluster.submit(node, cluster.commitment_txs(node, 20))
        assert code == 200, f"submit to node{node}: HTTP {code} {body}"
    height = max(int(cluster.status(i)["height"]) for i in range(len(cluster.nodes)))
    cluster.wait_same_tip(list(range(len(cluster.nodes))), height, timeout=60)
    return height


def test_prometheus_scrapes_every_node_and_loads_every_rule(
    prometheus_tools: dict[str, str], cluster: Cluster, tmp_path: Path
) -> None:
    agencies = {f"agency-{i}" for i in range(len(cluster.nodes))}
    config = scrape_config_for(cluster, tmp_path)
    with running_prometheus(prometheus_tools["prometheus"], config, tmp_path) as prom:
        # Every node is a healthy target, with its agency label.
        def all_up() -> bool:
            targets = [
                t for t in prom.get("targets")["activeTargets"] if t["labels"]["job"] == "creditnet"
            ]
            assert {t["labels"]["agency"] for t in targets} == agencies, targets
            return all(t["health"] == "up" for t in targets)

        poll(all_up, 30, "every node's target to be up")

        # Heights are scraped, and they rise as blocks are committed.
        first = commit_blocks(cluster, 4)

        def reached_first() -> dict[str, float] | None:
            heights = scraped_heights(prom)
            done = heights.keys() == agencies and min(heights.values()) >= first
            return heights if done else None

        before = poll(reached_first, 30, f"every node's scraped height to reach {first}")
        later = commit_blocks(cluster, 4)
        assert later > max(before.values())
        poll(
            lambda: all(v > before[a] for a, v in scraped_heights(prom).items()),
            30,
            f"every scraped height to rise above {before}",
        )

        # Every alert rule is loaded and evaluates without error on real data.
        names = {rule["alert"] for rule in alert_rules()}

        def rules_ok() -> bool:
            loaded = [r for g in prom.get("rules")["groups"] for r in g["rules"]]
            assert {r["name"] for r in loaded} == names
            broken = {r["name"]: r.get("lastError") for r in loaded if r["health"] == "err"}
            assert not broken, f"rules failing to evaluate: {broken}"
            return all(r["health"] == "ok" for r in loaded)

        poll(rules_ok, 30, "every rule to be evaluated")

        # Every dashboard query is valid PromQL for this Prometheus and finds data where a
        # healthy cluster has some.
        for title, expr in dashboard_exprs():
            result = prom.query(with_variables(expr))  # raises with Prometheus's error if bad
            if title in ("Committed height per node", "CPU per node", "Connected validators"):
                assert result, f"{title}: no data for {expr}"

        # A healthy cluster fires no alert.
        firing = [a for a in prom.get("alerts")["alerts"] if a["state"] == "firing"]
        assert firing == [], f"alerts firing on a healthy cluster: {firing}"


def test_alerts_and_dashboard_use_only_names_a_node_serves(cluster: Cluster) -> None:
    served = exposed_names(get_text(cluster.nodes[0].metrics))
    labels = declared_label_names() | TARGET_LABELS
    used: list[tuple[str, str]] = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    used += [(f"panel {title}", expr) for title, expr in dashboard_exprs()]
    unknown_names = {
        (where, name)
        for where, expr in used
        for name in promql_metric_names(expr) - served - {"up"}
    }
    assert unknown_names == set(), "metric names no node serves"
    unknown_labels = {
        (where, label) for where, expr in used for label in promql_label_names(expr) - labels
    }
    assert unknown_labels == set(), "label names no node or scrape config sets"

    # Labels in alert annotations and panel legends exist too.
    texts = [
        (f"alert {r['alert']}", value)
        for r in alert_rules()
        for value in r.get("annotations", {}).values()
    ]
    doc = json.loads(DASHBOARD.read_text("utf-8"))
    texts += [
        (f"panel {panel['title']}", target["legendFormat"])
        for panel in doc["panels"]
        for target in panel.get("targets", [])
    ]
    template = re.compile(r"\$labels\.(\w+)|\{\{\s*(\w+)\s*\}\}")
    template_labels = {(where, a or b) for where, text in texts for a, b in template.findall(text)}
    assert {(w, lbl) for w, lbl in template_labels if lbl not in labels} == set()
    # The check is not vacuous: the dashboard does chart labelled series.
    assert {"agency", "reason", "kind", "task"} <= {lbl for _, lbl in template_labels}


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    doc = json.loads(DASHBOARD.read_text("utf-8"))
    assert doc["__inputs"] == [
        {
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "description": doc["__inputs"][0]["description"],
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 36
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = {p["title"] for p in doc["panels"]}
    for wanted in (
        "Committed height per node",
        "Block interval (quantiles)",
        "Commit latency (quantiles)",
        "Transactions committed per second",
        "Mempool",
        "Connected validators",
        "View and view changes",
        "Peer messages per second",
        "Refused peer messages by reason",
        "Suspicions by kind",
        "API requests per second by route",
        "CPU per node",
        "Resident memory per node",
        "Block store time (quantiles)",
        "Worker thread CPU by task",
    ):
        assert wanted in titles
    for panel in doc["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
