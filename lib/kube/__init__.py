"""All Kubernetes API I/O, one concern a module, each saying what it does.

credentials (kubeconfig, in-cluster), transport (one request), decoding
(response bodies) and api (the calls a run makes).
"""

from lib.kube.api import Api, SelectorRejected, WriteConflict, object_path
from lib.kube.credentials import load_client, remove_temp_files
from lib.kube.decoding import JsonObject, ListItems, MalformedBody, decode_page
from lib.kube.transport import Deadline, HttpError, warning_texts

__all__ = [
    "Api",
    "Deadline",
    "HttpError",
    "JsonObject",
    "ListItems",
    "MalformedBody",
    "SelectorRejected",
    "WriteConflict",
    "decode_page",
    "load_client",
    "object_path",
    "remove_temp_files",
    "warning_texts",
]
