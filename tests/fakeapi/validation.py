"""The API server's validation rules (the 422s) and the name and label grammar they use."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from tests.fakeapi.core import JSON, FakeApiError, Kind, kind_of

#: API server limits (k8s.io/api validation) the reconciler must respect.
MAX_SLICE_ENDPOINTS = 1000
MAX_SLICE_PORTS = 100
MAX_ENDPOINT_ADDRESSES = 100
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


def _invalid_value(where: str, value: Any, detail: str) -> str:
    return f"{where}: Invalid value: {json.dumps(value)}: {detail}"


def _ip_problem(value: Any, version: int | None) -> str | None:
    """Why an endpoint IP is unacceptable, or None."""
    if not isinstance(value, str) or "%" in value:
        return "must be a valid IP address"
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return "must be a valid IP address"
    if version is not None and ip.version != version:
        return f"must be an IPv{version} address"
    if ip.is_unspecified:
        return "may not be unspecified (0.0.0.0, ::)"
    if ip.is_loopback:
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if ip.is_link_local:
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    if ip.is_multicast:
        return "may not be in the multicast range (224.0.0.0/4, ff00::/8)"
    return None


def _check_port(errors: list[str], where: str, value: Any, *, required: bool = True) -> None:
    if value is None:
        if required:
            errors.append(f"{where}: Required value")
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        errors.append(_invalid_value(where, value, "must be between 1 and 65535, inclusive"))


def _check_protocol(errors: list[str], where: str, value: Any) -> None:
    if value not in ("TCP", "UDP", "SCTP"):
        errors.append(
            f'{where}: Unsupported value: {json.dumps(value)}: supported values: "SCTP", "TCP", "UDP"'
        )


def _check_ports(errors: list[str], where: str, ports: Any, *, need_names: bool, port_required: bool) -> None:
    if ports is None:
        return
    if not isinstance(ports, list):
        errors.append(_invalid_value(where, ports, "must be a list"))
        return
    names: set[str] = set()
    for i, port in enumerate(ports):
        at = f"{where}[{i}]"
        if not isinstance(port, dict):
            errors.append(_invalid_value(at, port, "must be an object"))
            continue
        name = port.get("name")
        if name in (None, ""):
            if need_names and len(ports) > 1:
                errors.append(f"{at}.name: Required value")
        elif not is_dns_label(name):
            errors.append(_invalid_value(f"{at}.name", name, "must be a DNS-1123 label"))
        elif name in names:
            errors.append(f"{at}.name: Duplicate value: {json.dumps(name)}")
        else:
            names.add(name)
        _check_port(errors, f"{at}.port", port.get("port"), required=port_required)
        _check_protocol(errors, f"{at}.protocol", port.get("protocol", "TCP"))


def _check_target_ref(errors: list[str], where: str, ref: Any) -> None:
    if ref is not None and not isinstance(ref, dict):
        errors.append(_invalid_value(where, ref, "must be an object"))


def _check_metadata(errors: list[str], kind: Kind, meta: JSON) -> None:
    name = meta.get("name")
    if kind.kind == "Service":
        if not is_dns1035_label(name):
            errors.append(
                _invalid_value(
                    "metadata.name",
                    name,
                    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                    "start with an alphabetic character, and end with an alphanumeric character",
                )
            )
    elif not is_dns_subdomain(name):
        errors.append(
            _invalid_value(
                "metadata.name",
                name,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character",
            )
        )
    labels = meta.get("labels", {})
    if not isinstance(labels, dict):
        errors.append(_invalid_value("metadata.labels", labels, "must be a map of strings"))
    else:
        for key, value in labels.items():
            if not is_qualified_name(key):
                errors.append(_invalid_value("metadata.labels", key, "name part must be a qualified name"))
            if not is_label_value(value):
                errors.append(
                    _invalid_value(
                        f"metadata.labels.{key}", value, "a valid label must be 63 characters or less"
                    )
                )
    annotations = meta.get("annotations", {})
    if not isinstance(annotations, dict):
        errors.append(_invalid_value("metadata.annotations", annotations, "must be a map of strings"))
    else:
        for key, value in annotations.items():
            if not is_qualified_name(key):
                errors.append(
                    _invalid_value("metadata.annotations", key, "name part must be a qualified name")
                )
            if not isinstance(value, str):
                errors.append(_invalid_value(f"metadata.annotations.{key}", value, "must be a string"))
    refs = meta.get("ownerReferences", [])
    if not isinstance(refs, list):
        errors.append(_invalid_value("metadata.ownerReferences", refs, "must be a list"))
        return
    controllers = 0
    for i, ref in enumerate(refs):
        at = f"metadata.ownerReferences[{i}]"
        if not isinstance(ref, dict):
            errors.append(_invalid_value(at, ref, "must be an object"))
            continue
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                errors.append(f"{at}.{key}: Required value: {key} must not be empty")
        if ref.get("controller") is True:
            controllers += 1
    if controllers > 1:
        errors.append(
            "metadata.ownerReferences: Invalid value: only one reference can have Controller set to true"
        )


def _check_service(errors: list[str], obj: JSON) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errors.append("spec: Required value")
        return
    kind = spec.get("type", "ClusterIP")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errors.append(
            f"spec.type: Unsupported value: {json.dumps(kind)}: supported values: "
            '"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'
        )
    cluster_ip = spec.get("clusterIP")
    if cluster_ip not in (None, "", "None") and _ip_problem(cluster_ip, None):
        errors.append(
            _invalid_value("spec.clusterIP", cluster_ip, "must be empty, 'None', or a valid IP address")
        )
    ports = spec.get("ports")
    if not ports and cluster_ip != "None" and kind != "ExternalName":
        errors.append("spec.ports: Required value")
    _check_ports(errors, "spec.ports", ports, need_names=True, port_required=True)
    for i, port in enumerate(ports if isinstance(ports, list) else []):
        target = port.get("targetPort") if isinstance(port, dict) else None
        if target is None:
            continue
        if isinstance(target, str):
            if not (
                len(target) <= 15
                and _IANA_SVC_NAME.fullmatch(target)
                and "--" not in target
                and re.search("[a-z]", target)
            ):
                errors.append(
                    _invalid_value(f"spec.ports[{i}].targetPort", target, "must be an IANA_SVC_NAME")
                )
        else:
            _check_port(errors, f"spec.ports[{i}].targetPort", target)
    selector = spec.get("selector")
    if selector is not None and not (
        isinstance(selector, dict) and all(is_label_value(v) for v in selector.values())
    ):
        errors.append(_invalid_value("spec.selector", selector, "must be a map of label values"))


def _check_endpoints(errors: list[str], obj: JSON) -> None:
    subsets = obj.get("subsets")
    if subsets is None:
        return
    if not isinstance(subsets, list):
        errors.append(_invalid_value("subsets", subsets, "must be a list"))
        return
    total = 0
    for i, subset in enumerate(subsets):
        at = f"subsets[{i}]"
        if not isinstance(subset, dict):
            errors.append(_invalid_value(at, subset, "must be an object"))
            continue
        if not subset.get("addresses") and not subset.get("notReadyAddresses"):
            errors.append(f"{at}: Required value: must specify `addresses` or `notReadyAddresses`")
        for list_name in ("addresses", "notReadyAddresses"):
            addresses = subset.get(list_name) or []
            if not isinstance(addresses, list):
                errors.append(_invalid_value(f"{at}.{list_name}", addresses, "must be a list"))
                continue
            total += len(addresses)
            for j, address in enumerate(addresses):
                where = f"{at}.{list_name}[{j}]"
                if not isinstance(address, dict):
                    errors.append(_invalid_value(where, address, "must be an object"))
                    continue
                problem = _ip_problem(address.get("ip"), None)
                if problem:
                    errors.append(_invalid_value(f"{where}.ip", address.get("ip"), problem))
                node_name = address.get("nodeName")
                if node_name is not None and not is_dns_subdomain(node_name):
                    errors.append(_invalid_value(f"{where}.nodeName", node_name, "must be a DNS subdomain"))
                _check_target_ref(errors, f"{where}.targetRef", address.get("targetRef"))
        _check_ports(errors, f"{at}.ports", subset.get("ports"), need_names=True, port_required=True)
    if total > MAX_ENDPOINTS_ADDRESSES:
        # The real API server accepts this; the fake refuses it so a reconciler
        # that forgets to truncate (SPEC: first 1000 + over-capacity) is caught.
        errors.append(f"subsets: Too many: {total}: must have at most {MAX_ENDPOINTS_ADDRESSES} addresses")


def _check_endpoint_slice(errors: list[str], obj: JSON) -> None:
    family = obj.get("addressType")
    if family is None:
        errors.append("addressType: Required value")
    elif family not in ("IPv4", "IPv6", "FQDN"):
        errors.append(
            f'addressType: Unsupported value: {json.dumps(family)}: supported values: "FQDN", "IPv4", "IPv6"'
        )
    version = {"IPv4": 4, "IPv6": 6}.get(family) if isinstance(family, str) else None
    endpoints = obj.get("endpoints")
    if endpoints is not None and not isinstance(endpoints, list):
        errors.append(_invalid_value("endpoints", endpoints, "must be a list"))
        endpoints = None
    endpoints = endpoints or []
    if len(endpoints) > MAX_SLICE_ENDPOINTS:
        errors.append(f"endpoints: Too many: {len(endpoints)}: must have at most {MAX_SLICE_ENDPOINTS} items")
    for i, endpoint in enumerate(endpoints):
        at = f"endpoints[{i}]"
        if not isinstance(endpoint, dict):
            errors.append(_invalid_value(at, endpoint, "must be an object"))
            continue
        addresses = endpoint.get("addresses")
        if not isinstance(addresses, list) or not addresses:
            errors.append(f"{at}.addresses: Required value: must contain at least 1 address")
            addresses = []
        elif len(addresses) > MAX_ENDPOINT_ADDRESSES:
            errors.append(
                f"{at}.addresses: Too many: {len(addresses)}: "
                f"must have at most {MAX_ENDPOINT_ADDRESSES} items"
            )
        for j, address in enumerate(addresses):
            if family == "FQDN":
                problem = None if is_dns_subdomain(address) else "must be a DNS subdomain"
            elif version is not None:
                problem = _ip_problem(address, version)
            else:
                problem = None
            if problem:
                errors.append(_invalid_value(f"{at}.addresses[{j}]", address, problem))
        conditions = endpoint.get("conditions", {})
        if not isinstance(conditions, dict):
            errors.append(_invalid_value(f"{at}.conditions", conditions, "must be an object"))
        else:
            for key, value in conditions.items():
                if value is not None and not isinstance(value, bool):
                    errors.append(_invalid_value(f"{at}.conditions.{key}", value, "must be a boolean"))
        node_name = endpoint.get("nodeName")
        if node_name is not None and not is_dns_subdomain(node_name):
            errors.append(_invalid_value(f"{at}.nodeName", node_name, "must be a DNS subdomain"))
        hostname = endpoint.get("hostname")
        if hostname is not None and not is_dns_label(hostname):
            errors.append(_invalid_value(f"{at}.hostname", hostname, "must be a DNS-1123 label"))
        _check_target_ref(errors, f"{at}.targetRef", endpoint.get("targetRef"))
    ports = obj.get("ports")
    if isinstance(ports, list) and len(ports) > MAX_SLICE_PORTS:
        errors.append(f"ports: Too many: {len(ports)}: must have at most {MAX_SLICE_PORTS} items")
    _check_ports(errors, "ports", ports, need_names=False, port_required=False)


def validate(kind_name: str, obj: JSON) -> list[str]:
    """The validation errors of a whole object (empty when valid), as the API server words them."""
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
        _check_endpoint_slice(errors, obj)
    return errors


def invalid(kind: Kind, name: str, errors: list[str]) -> FakeApiError:
    shown = errors[:20] + ([f"... and {len(errors) - 20} more errors"] if len(errors) > 20 else [])
    text = shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"
    causes = [
        {
            "reason": "FieldValueInvalid",
            "message": error.partition(": ")[2],
            "field": error.partition(": ")[0],
        }
        for error in errors[:20]
    ]
    return FakeApiError(
        422,
        f'{kind.qualified_kind} "{name}" is invalid: {text}',
        details={"name": name, "group": kind.group, "kind": kind.kind, "causes": causes},
    )
