"""lib/config.py: flags, ``KUBELET_ENDPOINTS_<FLAG>`` variables, defaults, usage errors.

README "Command line".
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.config import Config, parse
from lib.exitcodes import ExitCode, UsageError

# The README's table, flag -> default.
README_DEFAULTS: dict[str, Any] = {
    "kubeconfig": None,
    "context": None,
    "namespace": "kube-system",
    "service_name": "kubelet",
    "node_selector": "",
    "address_type": "internal",
    "resources": ("endpoints", "endpointslices"),
    "max_endpoints_per_slice": 100,
    "http_metrics": False,
    "field_manager": "kubelet-endpoints-reconciler",
    "dry_run": False,
    "timeout": 50.0,
    "allow_empty": False,
    "log_format": "json",
    "log_level": "info",
}


def test_defaults_equal_the_spec_table() -> None:
    cfg = parse([], {})
    for field, expected in README_DEFAULTS.items():
        assert getattr(cfg, field) == expected, field
    assert cfg.manages_endpoints is True
    assert cfg.manages_slices is True
    assert cfg == Config()


def test_unrelated_environment_is_ignored() -> None:
    env = {"HOME": "/root", "KUBELET_ENDPOINTS_NOT_A_FLAG": "x", "NAMESPACE": "other"}
    assert parse([], env) == Config()


def test_config_is_frozen() -> None:
    cfg = parse([], {})
    with pytest.raises(AttributeError):
        cfg.namespace = "x"  # type: ignore[misc]


# flag, variable, raw value, Config field, parsed value
VALUED = [
    ("--kubeconfig", "KUBECONFIG", "/tmp/kc", "kubeconfig", "/tmp/kc"),
    ("--context", "KUBELET_ENDPOINTS_CONTEXT", "prod", "context", "prod"),
    ("--namespace", "KUBELET_ENDPOINTS_NAMESPACE", "monitoring", "namespace", "monitoring"),
    ("--service-name", "KUBELET_ENDPOINTS_SERVICE_NAME", "kubelet-x", "service_name", "kubelet-x"),
    (
        "--node-selector",
        "KUBELET_ENDPOINTS_NODE_SELECTOR",
        "role=worker,!gpu",
        "node_selector",
        "role=worker,!gpu",
    ),
    ("--address-type", "KUBELET_ENDPOINTS_ADDRESS_TYPE", "external", "address_type", "external"),
    ("--resources", "KUBELET_ENDPOINTS_RESOURCES", "endpointslices", "resources", ("endpointslices",)),
    ("--resources", "KUBELET_ENDPOINTS_RESOURCES", "endpoints", "resources", ("endpoints",)),
    (
        "--resources",
        "KUBELET_ENDPOINTS_RESOURCES",
        " endpointslices , endpoints,endpoints ",
        "resources",
        ("endpoints", "endpointslices"),
    ),
    (
        "--max-endpoints-per-slice",
        "KUBELET_ENDPOINTS_MAX_ENDPOINTS_PER_SLICE",
        "1",
        "max_endpoints_per_slice",
        1,
    ),
    (
        "--max-endpoints-per-slice",
        "KUBELET_ENDPOINTS_MAX_ENDPOINTS_PER_SLICE",
        "1000",
        "max_endpoints_per_slice",
        1000,
    ),
    ("--field-manager", "KUBELET_ENDPOINTS_FIELD_MANAGER", "my.manager_2", "field_manager", "my.manager_2"),
    ("--timeout", "KUBELET_ENDPOINTS_TIMEOUT", "12.5", "timeout", 12.5),
    ("--timeout", "KUBELET_ENDPOINTS_TIMEOUT", "30", "timeout", 30.0),
    ("--log-format", "KUBELET_ENDPOINTS_LOG_FORMAT", "console", "log_format", "console"),
    ("--log-level", "KUBELET_ENDPOINTS_LOG_LEVEL", "debug", "log_level", "debug"),
    ("--log-level", "KUBELET_ENDPOINTS_LOG_LEVEL", "warning", "log_level", "warning"),
    ("--log-level", "KUBELET_ENDPOINTS_LOG_LEVEL", "error", "log_level", "error"),
]


@pytest.mark.parametrize(("flag", "var", "raw", "field", "value"), VALUED)
def test_flag_sets_the_value(flag: str, var: str, raw: str, field: str, value: Any) -> None:
    assert getattr(parse([flag, raw], {}), field) == value
    assert getattr(parse([f"{flag}={raw}"], {}), field) == value


@pytest.mark.parametrize(("flag", "var", "raw", "field", "value"), VALUED)
def test_variable_sets_the_value(flag: str, var: str, raw: str, field: str, value: Any) -> None:
    assert getattr(parse([], {var: raw}), field) == value


# A second valid value per flag, so the flag and the variable can disagree.
OTHER = {
    "--kubeconfig": "/etc/other",
    "--context": "staging",
    "--namespace": "other-ns",
    "--service-name": "other",
    "--node-selector": "a=b",
    "--address-type": "internal",
    "--resources": "endpoints,endpointslices",
    "--max-endpoints-per-slice": "7",
    "--field-manager": "other-manager",
    "--timeout": "9",
    "--log-format": "json",
    "--log-level": "info",
}


@pytest.mark.parametrize(("flag", "var", "raw", "field", "value"), VALUED)
def test_flag_wins_over_variable(flag: str, var: str, raw: str, field: str, value: Any) -> None:
    assert getattr(parse([flag, raw], {var: OTHER[flag]}), field) == value


def test_kubeconfig_reads_kubeconfig_not_the_prefixed_variable() -> None:
    assert parse([], {"KUBELET_ENDPOINTS_KUBECONFIG": "/x"}).kubeconfig is None
    assert parse([], {"KUBECONFIG": "/y"}).kubeconfig == "/y"


BOOLEANS = [
    ("--http-metrics", "KUBELET_ENDPOINTS_HTTP_METRICS", "http_metrics"),
    ("--dry-run", "KUBELET_ENDPOINTS_DRY_RUN", "dry_run"),
    ("--allow-empty", "KUBELET_ENDPOINTS_ALLOW_EMPTY", "allow_empty"),
]


@pytest.mark.parametrize(("flag", "var", "field"), BOOLEANS)
def test_boolean_flag(flag: str, var: str, field: str) -> None:
    assert getattr(parse([], {}), field) is False
    assert getattr(parse([flag], {}), field) is True
    # The flag wins over a variable saying false.
    assert getattr(parse([flag], {var: "false"}), field) is True


@pytest.mark.parametrize(("flag", "var", "field"), BOOLEANS)
@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        (" true ", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_boolean_variable(flag: str, var: str, field: str, raw: str, value: bool) -> None:
    assert getattr(parse([], {var: raw}), field) is value


@pytest.mark.parametrize(("flag", "var", "field"), BOOLEANS)
@pytest.mark.parametrize("raw", ["maybe", "2", "tru", "enabled"])
def test_bad_boolean_variable_is_a_usage_error_naming_it(flag: str, var: str, field: str, raw: str) -> None:
    with pytest.raises(UsageError, match=var) as err:
        parse([], {var: raw})
    assert int(err.value.exit_code) == 2


def test_boolean_flag_takes_no_value() -> None:
    with pytest.raises(UsageError, match="true"):
        parse(["--dry-run", "true"], {})


@pytest.mark.parametrize(
    "var",
    [
        "KUBELET_ENDPOINTS_NAMESPACE",
        "KUBELET_ENDPOINTS_SERVICE_NAME",
        "KUBELET_ENDPOINTS_RESOURCES",
        "KUBELET_ENDPOINTS_TIMEOUT",
        "KUBELET_ENDPOINTS_MAX_ENDPOINTS_PER_SLICE",
        "KUBELET_ENDPOINTS_LOG_LEVEL",
        "KUBECONFIG",
    ],
)
def test_empty_variable_means_unset(var: str) -> None:
    assert parse([], {var: ""}) == Config()


def test_empty_node_selector_variable_is_the_empty_selector() -> None:
    assert parse([], {"KUBELET_ENDPOINTS_NODE_SELECTOR": ""}).node_selector == ""
    assert parse(["--node-selector", ""], {"KUBELET_ENDPOINTS_NODE_SELECTOR": "a=b"}).node_selector == ""


def test_everything_at_once() -> None:
    cfg = parse(
        [
            "--kubeconfig=/kc",
            "--context=c",
            "--namespace=ns",
            "--service-name=svc",
            "--node-selector=x=y",
            "--address-type=external",
            "--resources=endpoints",
            "--max-endpoints-per-slice=50",
            "--http-metrics",
            "--field-manager=fm",
            "--dry-run",
            "--timeout=20",
            "--allow-empty",
            "--log-format=console",
            "--log-level=warning",
        ],
        {},
    )
    assert cfg == Config(
        kubeconfig="/kc",
        context="c",
        namespace="ns",
        service_name="svc",
        node_selector="x=y",
        address_type="external",
        resources=("endpoints",),
        max_endpoints_per_slice=50,
        http_metrics=True,
        field_manager="fm",
        dry_run=True,
        timeout=20.0,
        allow_empty=True,
        log_format="console",
        log_level="warning",
    )
    assert cfg.manages_endpoints is True
    assert cfg.manages_slices is False


def test_as_log_fields_is_flat_and_json_friendly() -> None:
    fields = parse(["--resources", "endpointslices"], {}).as_log_fields()
    assert fields["resources"] == ["endpointslices"]
    assert fields["namespace"] == "kube-system"
    assert fields["timeout"] == 50.0


# --- usage errors -------------------------------------------------------------------

BAD = [
    (["--max-endpoints-per-slice", "0"], "--max-endpoints-per-slice"),
    (["--max-endpoints-per-slice", "1001"], "--max-endpoints-per-slice"),
    (["--max-endpoints-per-slice", "-1"], "--max-endpoints-per-slice"),
    (["--max-endpoints-per-slice", "abc"], "--max-endpoints-per-slice"),
    (["--max-endpoints-per-slice", "1.5"], "--max-endpoints-per-slice"),
    (["--timeout", "-1"], "--timeout"),
    (["--timeout", "0"], "--timeout"),
    (["--timeout", "nan"], "--timeout"),
    (["--timeout", "inf"], "--timeout"),
    (["--timeout", "soon"], "--timeout"),
    (["--resources", "pods"], "--resources"),
    (["--resources", "endpoints,pods"], "--resources"),
    (["--resources", "endpointslice"], "--resources"),
    (["--resources", ""], "--resources"),
    (["--resources", ","], "--resources"),
    (["--address-type", "both"], "--address-type"),
    (["--address-type", "Internal"], "--address-type"),
    (["--log-level", "verbose"], "--log-level"),
    (["--log-level", "INFO"], "--log-level"),
    (["--log-format", "text"], "--log-format"),
    (["--namespace", ""], "--namespace"),
    (["--namespace", "Kube-System"], "--namespace"),
    (["--namespace", "-ns"], "--namespace"),
    (["--namespace", "a_b"], "--namespace"),
    (["--namespace", "a" * 64], "--namespace"),
    (["--service-name", ""], "--service-name"),
    (["--service-name", "Kubelet"], "--service-name"),
    (["--service-name", "kube.let"], "--service-name"),
    (["--service-name", "kubelet-"], "--service-name"),
    # A Service name is a DNS-1035 label: a letter first.
    (["--service-name", "1kubelet"], "--service-name"),
    (["--service-name", "-kubelet"], "--service-name"),
    # The slice suffix ("-ipv6-<n>") must still fit in 63 characters.
    (["--service-name", "a" * 60], "--service-name"),
    (["--field-manager", ""], "--field-manager"),
    (["--field-manager", "has space"], "--field-manager"),
    (["--field-manager", "-leading"], "--field-manager"),
    (["--field-manager", "a/b"], "--field-manager"),
    (["--field-manager", "a" * 64], "--field-manager"),
    (["--context", ""], "--context"),
    (["--frobnicate"], "--frobnicate"),
    (["--namespace"], "--namespace"),  # missing value
    (["positional"], "positional"),
]


@pytest.mark.parametrize(("argv", "flag"), BAD, ids=[" ".join(a)[:40] for a, _ in BAD])
def test_bad_flag_value_is_a_usage_error_naming_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(UsageError) as err:
        parse(argv, {})
    assert flag in str(err.value)
    assert err.value.reason == str(err.value)
    assert err.value.exit_code == ExitCode.USAGE


BAD_VARIABLES = [
    ("KUBELET_ENDPOINTS_MAX_ENDPOINTS_PER_SLICE", "0", "--max-endpoints-per-slice"),
    ("KUBELET_ENDPOINTS_MAX_ENDPOINTS_PER_SLICE", "1001", "--max-endpoints-per-slice"),
    ("KUBELET_ENDPOINTS_TIMEOUT", "-1", "--timeout"),
    ("KUBELET_ENDPOINTS_TIMEOUT", "nan", "--timeout"),
    ("KUBELET_ENDPOINTS_RESOURCES", "pods", "--resources"),
    ("KUBELET_ENDPOINTS_RESOURCES", " , ", "--resources"),
    ("KUBELET_ENDPOINTS_ADDRESS_TYPE", "both", "--address-type"),
    ("KUBELET_ENDPOINTS_LOG_LEVEL", "trace", "--log-level"),
    ("KUBELET_ENDPOINTS_LOG_FORMAT", "logfmt", "--log-format"),
    ("KUBELET_ENDPOINTS_NAMESPACE", "Bad", "--namespace"),
    ("KUBELET_ENDPOINTS_SERVICE_NAME", "bad_name", "--service-name"),
    ("KUBELET_ENDPOINTS_FIELD_MANAGER", "bad manager", "--field-manager"),
]


@pytest.mark.parametrize(("var", "raw", "flag"), BAD_VARIABLES)
def test_bad_variable_value_is_a_usage_error_naming_the_flag(var: str, raw: str, flag: str) -> None:
    with pytest.raises(UsageError) as err:
        parse([], {var: raw})
    assert flag in str(err.value)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        # argparse would read these as --namespace, --dry-run and --timeout:
        # "--name kubelet" silently writing into a namespace called kubelet.
        (["--name", "kubelet"], "--name"),
        (["--dry"], "--dry"),
        (["--time", "5"], "--time"),
        (["--http"], "--http"),
    ],
)
def test_abbreviated_flags_are_unknown_flags(argv: list[str], flag: str) -> None:
    with pytest.raises(UsageError, match=flag):
        parse(argv, {})


def test_a_good_flag_does_not_rescue_a_bad_variable_of_another_flag() -> None:
    with pytest.raises(UsageError, match="--timeout"):
        parse(["--namespace", "ok"], {"KUBELET_ENDPOINTS_TIMEOUT": "0"})


def test_a_good_flag_overrides_a_bad_variable_of_the_same_flag() -> None:
    assert parse(["--timeout", "5"], {"KUBELET_ENDPOINTS_TIMEOUT": "nan"}).timeout == 5.0


@pytest.mark.parametrize("name", ["a", "kubelet", "a" * 53, "k8s-kubelet-1"])
def test_longest_and_shortest_service_names_accepted(name: str) -> None:
    assert parse(["--service-name", name], {}).service_name == name


@settings(max_examples=100, deadline=None)
@given(n=st.integers(min_value=-5000, max_value=5000))
def test_max_endpoints_per_slice_range(n: int) -> None:
    if 1 <= n <= 1000:
        assert parse(["--max-endpoints-per-slice", str(n)], {}).max_endpoints_per_slice == n
    else:
        with pytest.raises(UsageError, match="--max-endpoints-per-slice"):
            parse([f"--max-endpoints-per-slice={n}"], {})
