"""The alert rules: promtool accepts them, its unit tests (made-up series in deploy/prometheus/arcmatch-rules.test.yml)
show each alert firing when it should and silent beside a near miss, and the PrometheusRule shipped in k8s/ holds the
same groups as the plain rules file."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "arcmatch-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "arcmatch-rules.test.yml"
OPERATOR_RULES = ROOT / "k8s" / "base" / "prometheus-rules.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus; .ci/run installs it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_rules():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_fires_when_it_should_and_only_then():
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_unit_test():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {case["alertname"] for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in t.get("alert_rule_test", [])}
    assert alerts == tested


def test_the_prometheus_rule_holds_the_same_groups():
    """One set of rules in two wrappings: k8s/base/prometheus-rules.yaml is the plain file's groups under `spec`
    (copy them over after editing the plain file)."""
    plain = yaml.safe_load(RULES.read_text())
    operator = yaml.safe_load(OPERATOR_RULES.read_text())
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"] == plain
