"""The API server's validation rules (the 422s) and the name and label grammar they use."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from tests.fakeapi.core import JSON, FakeApiError, Kind, kind_of, status_details
from tests.fakeapi.versions import OLD_MINOR

#: API server limits (k8s.io/kubernetes/pkg/apis/discovery/validation).
MAX_SLICE_ENDPOINTS = 1000
MAX_SLICE_PORTS = 20000
MAX_ENDPOINT_ADDRESSES = 100
#: The Endpoints cap the endpoints controller keeps to (the over-capacity
#: annotation); the API server itself accepts more, and so does the fake.
MAX_ENDPOINTS_ADDRESSES = 1000

# --- names and labels (k8s.io/apimachinery/pkg/util/validation) ------------------

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def is_dns_subdomain(value: Any) -> bool:
    """A DNS-1123 subdomain (object names, node names)."""
    return isinstance(value, str) and len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.fullmatch(value))


def is_dns_label(value: Any) -> bool:
    """A DNS-1123 label (port names, namespaces)."""
    return isinstance(value, str) and len(value) <= 63 and bool(_DNS1123_LABEL.fullmatch(value))


def is_dns1035_label(value: Any) -> bool:
    """A DNS-1035 label (Service names: must start with a letter)."""
    return isinstance(value, str) and len(value) <= 63 and bool(_DNS1035_LABEL.fullmatch(value))


def is_qualified_name(value: Any) -> bool:
    """A label or annotation key: ``[prefix/]name``."""
    if not isinstance(value, str):
        return False
    prefix, _, name = value.rpartition("/")
    if "/" in value and not is_dns_subdomain(prefix):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.fullmatch(name))


def is_label_value(value: Any) -> bool:
    """A label value: empty, or up to 63 alphanumerics with ``-_.`` inside."""
    return isinstance(value, str) and (
        value == "" or (len(value) <= 63 and bool(_LABEL_NAME.fullmatch(value)))
    )


# --- validation (k8s.io/kubernetes/pkg/apis/*/validation) ----------------------------
# Messages as kube-apiserver v1.24 words them; each rule is checked against the
# real server by tests/contract/test_contract.py.

_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
    "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
_PORT_RANGE_MSG = "must be between 1 and 65535, inclusive"


def _invalid_value(where: str, value: Any, detail: str) -> str:
    return f"{where}: Invalid value: {json.dumps(value)}: {detail}"


def _label_value_problem(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    return None if is_label_value(value) else _LABEL_VALUE_MSG


def _ip_problems(value: Any, where: str) -> list[str]:
    """ValidateEndpointIP: a valid IP, not unspecified, loopback, link-local or link-local multicast."""
    try:
        ip = ipaddress.ip_address(value) if isinstance(value, str) and "%" not in value else None
    except ValueError:
        ip = None
    if ip is None:
        return [_invalid_value(where, value, "must be a valid IP address")]
    problem = None
    if ip.is_unspecified:
        problem = f"may not be unspecified ({value})"
    elif ip.is_loopback:
        problem = "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    elif ip.is_link_local:
        problem = "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    elif (ip.version == 4 and ip in _V4_LL_MULTICAST) or (
        ip.version == 6 and ip.packed[0] == 0xFF and ip.packed[1] & 0x0F == 0x02
    ):
        problem = "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
    return [_invalid_value(where, value, problem)] if problem else []


_V4_LL_MULTICAST = ipaddress.ip_network("224.0.0.0/24")


def _check_port(errors: list[str], where: str, value: Any) -> None:
    port = 0 if value is None else value  # an int32, not a pointer: absent is 0
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        errors.append(_invalid_value(where, port, _PORT_RANGE_MSG))


def _check_protocol(errors: list[str], where: str, value: Any) -> None:
    if value not in ("TCP", "UDP", "SCTP"):
        errors.append(
            f'{where}: Unsupported value: {json.dumps(value)}: supported values: "SCTP", "TCP", "UDP"'
        )


def _check_ports(errors: list[str], where: str, ports: Any, *, slice_ports: bool) -> None:
    """Service and Endpoints ports: names required when more than one, numbers 1-65535.

    EndpointSlice ports (``slice_ports``): names optional but unique (even
    empty ones), numbers unchecked.
    """
    if not isinstance(ports, list):
        return
    names: set[str] = set()
    for i, port in enumerate(ports):
        at = f"{where}[{i}]"
        if not isinstance(port, dict):
            continue
        name = port.get("name") or ""
        if name == "" and not slice_ports:
            if len(ports) > 1:
                errors.append(f"{at}.name: Required value")
        elif name != "" and not is_dns_label(name):
            errors.append(_invalid_value(f"{at}.name", name, _DNS1123_LABEL_MSG))
        elif name in names:
            errors.append(f"{at}.name: Duplicate value: {json.dumps(name)}")
        names.add(name)
        if not slice_ports:
            _check_port(errors, f"{at}.port", port.get("port"))
        _check_protocol(errors, f"{at}.protocol", port.get("protocol", "TCP"))


def _check_metadata(errors: list[str], kind: Kind, meta: JSON) -> None:
    name = meta.get("name")
    if kind.kind == "Service":
        if not is_dns1035_label(name):
            errors.append(_invalid_value("metadata.name", name, _DNS1035_LABEL_MSG))
    elif not is_dns_subdomain(name):
        errors.append(_invalid_value("metadata.name", name, _DNS1123_SUBDOMAIN_MSG))
    for what in ("labels", "annotations"):
        values = meta.get(what) or {}
        for key, value in values.items() if isinstance(values, dict) else ():
            if not is_qualified_name(key):
                errors.append(_invalid_value(f"metadata.{what}", key, _QUALIFIED_NAME_MSG))
            problem = _label_value_problem(value) if what == "labels" and isinstance(value, str) else None
            if problem:
                errors.append(_invalid_value("metadata.labels", value, problem))
    refs = meta.get("ownerReferences") or []
    controllers = 0
    for ref in refs if isinstance(refs, list) else ():
        if not isinstance(ref, dict):
            continue
        # The field has no index: ValidateOwnerReferences words it so.
        for key, word in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not ref.get(key):
                errors.append(
                    _invalid_value(
                        f"metadata.ownerReferences.{key}", ref.get(key, ""), f"{word} must not be empty"
                    )
                )
        if ref.get("controller") is True:
            controllers += 1
    if controllers > 1:
        errors.append(
            _invalid_value(
                "metadata.ownerReferences", refs, "Only one reference can have Controller set to true"
            )
        )


def _check_service(errors: list[str], obj: JSON) -> None:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    kind = spec.get("type", "ClusterIP")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errors.append(
            f"spec.type: Unsupported value: {json.dumps(kind)}: supported values: "
            '"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'
        )
    cluster_ip = spec.get("clusterIP")
    if cluster_ip not in (None, "", "None") and not _is_ip(cluster_ip):
        errors.append(
            _invalid_value(
                "spec.clusterIPs[0]",
                cluster_ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )
        )
    ports = spec.get("ports")
    if not ports and cluster_ip != "None" and kind != "ExternalName":
        errors.append("spec.ports: Required value")
    _check_ports(errors, "spec.ports", ports, slice_ports=False)
    for i, port in enumerate(ports if isinstance(ports, list) else []):
        target = port.get("targetPort") if isinstance(port, dict) else None
        if target is None:
            continue
        where = f"spec.ports[{i}].targetPort"
        if isinstance(target, str):
            if len(target) > 15:
                errors.append(_invalid_value(where, target, "must be no more than 15 characters"))
            elif not _IANA_SVC_NAME.fullmatch(target):
                errors.append(
                    _invalid_value(
                        where,
                        target,
                        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                    )
                )
            elif "--" in target:
                errors.append(_invalid_value(where, target, "must not contain consecutive hyphens"))
            elif not re.search("[a-z]", target):
                errors.append(_invalid_value(where, target, "must contain at least one letter (a-z)"))
        else:
            _check_port(errors, where, target)
    selector = spec.get("selector") or {}
    for value in selector.values() if isinstance(selector, dict) else ():
        problem = _label_value_problem(value) if isinstance(value, str) else None
        if problem:
            errors.append(_invalid_value("spec.selector", value, problem))


def _is_ip(value: Any) -> bool:
    if not isinstance(value, str) or "%" in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_endpoints(errors: list[str], obj: JSON) -> None:
    subsets = obj.get("subsets")
    for i, subset in enumerate(subsets if isinstance(subsets, list) else []):
        at = f"subsets[{i}]"
        if not isinstance(subset, dict):
            continue
        if not subset.get("addresses") and not subset.get("notReadyAddresses"):
            errors.append(f"{at}: Required value: must specify `addresses` or `notReadyAddresses`")
        for list_name in ("addresses", "notReadyAddresses"):
            for j, address in enumerate(subset.get(list_name) or []):
                where = f"{at}.{list_name}[{j}]"
                if not isinstance(address, dict):
                    continue
                ip = address.get("ip")
                if not _is_ip(ip):
                    # ValidateIP, then ValidateEndpointIP: two errors for one bad IP.
                    errors.append(
                        _invalid_value(
                            f"{where}.ip", ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
                        )
                    )
                errors.extend(_ip_problems(ip, f"{where}.ip"))
                node_name = address.get("nodeName")
                if node_name is not None and not is_dns_subdomain(node_name):
                    errors.append(_invalid_value(f"{where}.nodeName", node_name, _DNS1123_SUBDOMAIN_MSG))
        _check_ports(errors, f"{at}.ports", subset.get("ports"), slice_ports=False)
    # No cap on the number of addresses: the API server has none (the endpoints
    # controller truncates at 1000 with an annotation, a convention of its own).


def _check_endpoint_slice(errors: list[str], obj: JSON, minor: int) -> None:
    family = obj.get("addressType")
    if family is None:
        errors.append("addressType: Required value")
    elif family not in ("IPv4", "IPv6", "FQDN"):
        errors.append(
            f'addressType: Unsupported value: {json.dumps(family)}: supported values: "FQDN", "IPv4", "IPv6"'
        )
    endpoints = obj.get("endpoints") if isinstance(obj.get("endpoints"), list) else []
    if len(endpoints) > MAX_SLICE_ENDPOINTS:
        errors.append(f"endpoints: Too many: {len(endpoints)}: must have at most {MAX_SLICE_ENDPOINTS} items")
    for i, endpoint in enumerate(endpoints):
        at = f"endpoints[{i}]"
        if not isinstance(endpoint, dict):
            continue
        addresses = endpoint.get("addresses") or []
        if not addresses:
            errors.append(f"{at}.addresses: Required value: must contain at least 1 address")
        elif len(addresses) > MAX_ENDPOINT_ADDRESSES:
            limit = MAX_ENDPOINT_ADDRESSES
            errors.append(f"{at}.addresses: Too many: {len(addresses)}: must have at most {limit} items")
        for j, address in enumerate(addresses):
            where = f"{at}.addresses[{j}]"
            if family == "FQDN":
                if not is_dns_subdomain(address):
                    errors.append(_invalid_value(where, address, _DNS1123_SUBDOMAIN_MSG))
            elif family in ("IPv4", "IPv6"):
                ip = ipaddress.ip_address(address) if _is_ip(address) else None
                if ip is None or f"IPv{ip.version}" != family:
                    # An address of the other family: v1.24 names the address,
                    # current servers the endpoint's address list.
                    mismatch = ip is not None and minor > OLD_MINOR
                    field = f"{at}.addresses" if mismatch else where
                    errors.append(_invalid_value(field, address, f"must be a valid {family} address"))
                if ip is None or f"IPv{ip.version}" == family:
                    errors.extend(_ip_problems(address, where))
        node_name = endpoint.get("nodeName")
        if node_name is not None and not is_dns_subdomain(node_name):
            errors.append(_invalid_value(f"{at}.nodeName", node_name, _DNS1123_SUBDOMAIN_MSG))
        hostname = endpoint.get("hostname")
        if hostname is not None and not is_dns_label(hostname):
            errors.append(_invalid_value(f"{at}.hostname", hostname, _DNS1123_LABEL_MSG))
    ports = obj.get("ports")
    if isinstance(ports, list) and len(ports) > MAX_SLICE_PORTS:
        errors.append(f"ports: Too many: {len(ports)}: must have at most {MAX_SLICE_PORTS} items")
    _check_ports(errors, "ports", ports, slice_ports=True)


def validate(kind_name: str, obj: JSON, minor: int = 35) -> list[str]:
    """The validation errors of a whole object (empty when valid), as the API server of
    version 1.``minor`` words them."""
    kind = kind_of(kind_name)
    errors: list[str] = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata: Required value"]
    _check_metadata(errors, kind, meta)
    if kind.kind == "Service":
        _check_service(errors, obj)
    elif kind.kind == "Endpoints":
        _check_endpoints(errors, obj)
    else:
        _check_endpoint_slice(errors, obj, minor)
    return errors


# --- types (what kube-apiserver refuses before validation, with a 500) -------------

_MAP, _LIST, _STR, _BOOL, _INT = "map", "list", "string", "boolean", "int"
#: The expected type of each field whose type a client could get wrong; ``*`` is
#: any list element or map value.
_TYPES: dict[str, dict[tuple[str, ...], str]] = {
    "*": {
        ("metadata",): _MAP,
        ("metadata", "labels"): _MAP,
        ("metadata", "labels", "*"): _STR,
        ("metadata", "annotations"): _MAP,
        ("metadata", "annotations", "*"): _STR,
        ("metadata", "ownerReferences"): _LIST,
        ("metadata", "ownerReferences", "*"): _MAP,
    },
    "Service": {
        ("spec",): _MAP,
        ("spec", "ports"): _LIST,
        ("spec", "ports", "*"): _MAP,
        ("spec", "ports", "*", "port"): _INT,
        ("spec", "selector"): _MAP,
        ("spec", "selector", "*"): _STR,
    },
    "Endpoints": {
        ("subsets",): _LIST,
        ("subsets", "*"): _MAP,
        ("subsets", "*", "addresses"): _LIST,
        ("subsets", "*", "addresses", "*"): _MAP,
        ("subsets", "*", "addresses", "*", "ip"): _STR,
        ("subsets", "*", "addresses", "*", "targetRef"): _MAP,
        ("subsets", "*", "notReadyAddresses"): _LIST,
        ("subsets", "*", "notReadyAddresses", "*"): _MAP,
        ("subsets", "*", "notReadyAddresses", "*", "ip"): _STR,
        ("subsets", "*", "notReadyAddresses", "*", "targetRef"): _MAP,
        ("subsets", "*", "ports"): _LIST,
        ("subsets", "*", "ports", "*"): _MAP,
        ("subsets", "*", "ports", "*", "port"): _INT,
    },
    "EndpointSlice": {
        ("endpoints",): _LIST,
        ("endpoints", "*"): _MAP,
        ("endpoints", "*", "addresses"): _LIST,
        ("endpoints", "*", "addresses", "*"): _STR,
        ("endpoints", "*", "conditions"): _MAP,
        ("endpoints", "*", "conditions", "*"): _BOOL,
        ("endpoints", "*", "targetRef"): _MAP,
        ("ports",): _LIST,
        ("ports", "*"): _MAP,
        ("ports", "*", "port"): _INT,
    },
}
_IS = {
    _MAP: lambda v: isinstance(v, dict),
    _LIST: lambda v: isinstance(v, list),
    _STR: lambda v: isinstance(v, str),
    _BOOL: lambda v: isinstance(v, bool),
    _INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
}


def typed_problem(kind_name: str, doc: JSON) -> str | None:
    """The first value of the wrong type in an apply body (``.path: expected T, got V``), or None."""
    types = {**_TYPES["*"], **_TYPES.get(kind_name, {})}

    def walk(value: Any, pattern: tuple[str, ...], shown: str) -> str | None:
        want = types.get(pattern)
        if value is None:
            return None
        if want is not None and not _IS[want](value):
            return f"{shown}: expected {want}, got {json.dumps(value)}"
        if isinstance(value, dict):
            for key, child in value.items():
                problem = walk(
                    child, (*pattern, "*" if (*pattern, "*") in types else str(key)), f"{shown}.{key}"
                )
                if problem:
                    return problem
        elif isinstance(value, list):
            for index, child in enumerate(value):
                problem = walk(child, (*pattern, "*"), f"{shown}[{index}]")
                if problem:
                    return problem
        return None

    return walk(doc, (), "")


_CAUSE_REASONS = (
    ("Required value", "FieldValueRequired"),
    ("Unsupported value", "FieldValueNotSupported"),
    ("Duplicate value", "FieldValueDuplicate"),
    ("Too many", "FieldValueTooMany"),
    ("Too long", "FieldValueTooLong"),
    ("Forbidden", "FieldValueForbidden"),
)


def invalid(kind: Kind, name: str, errors: list[str]) -> FakeApiError:
    """The 422 of an invalid object: one cause per error, typed as the API server types them."""
    shown = errors[:20] + ([f"... and {len(errors) - 20} more errors"] if len(errors) > 20 else [])
    text = shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"
    causes = []
    for error in errors[:20]:
        where, _, message = error.partition(": ")
        reason = next((r for prefix, r in _CAUSE_REASONS if message.startswith(prefix)), "FieldValueInvalid")
        causes.append({"reason": reason, "message": message, "field": where})
    return FakeApiError(
        422,
        f'{kind.qualified_kind} "{name}" is invalid: {text}',
        details={**status_details(kind, name, kind.kind), "causes": causes},
    )
