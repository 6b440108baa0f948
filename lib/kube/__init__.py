"""All Kubernetes API I/O, one concern a module.

- :mod:`lib.kube.credentials`: kubeconfig and in-cluster loading, exec
  plugins; errors that name what to fix, never a secret.
- :mod:`lib.kube.transport`: one request: the run's deadline, the retry
  policy, bounded reads, status codes to exceptions, server warnings. It
  knows no kind of object.
- :mod:`lib.kube.decoding`: response bodies: list pages decoded into the
  caller's typed items, objects split into members decoded when read.
- :mod:`lib.kube.api`: the calls a run makes on the transport: paged lists,
  get, apply, JSON patch, delete, and the paths of our kinds.
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
