"""A fake Kubernetes API server for the Kubernetes driver's tests: the few REST paths the
driver uses, over real HTTP, so the official client makes its real requests against it.

It stores what is created, answers 409 AlreadyExists and 404 NotFound as the API server
does (with a Status body), filters lists by equality label selectors, and records every
request. No controller runs: tests put pods in, as the kubelet's reports would be.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client

# collection path (without the namespace part) -> the kind its list answers
COLLECTIONS = {
    ("api/v1", "secrets"): "SecretList",
    ("api/v1", "services"): "ServiceList",
    ("api/v1", "pods"): "PodList",
    ("apis/apps/v1", "deployments"): "DeploymentList",
    ("apis/serving.kserve.io/v1beta1", "inferenceservices"): "InferenceServiceList",
}


@dataclass
class FakeKubernetes:
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (collection, namespace, name)
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)  # method, path, query
    url: str = ""

    def add(self, collection: str, obj: dict[str, Any]) -> None:
        self.objects[(collection, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj

    def names(self, collection: str) -> list[str]:
        return sorted(name for (kind, _, name) in self.objects if kind == collection)

    def api_client(self) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


def _matches(obj: dict[str, Any], selector: str) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return all(labels.get(key) == value for key, value in (term.split("=", 1) for term in selector.split(",") if term))


def _route(path: str) -> tuple[str, str, str | None]:
    """(collection, namespace, name or None) of /<group path>/namespaces/<ns>/<plural>[/<name>]."""
    before, _, after = path.strip("/").partition("/namespaces/")
    parts = after.split("/")
    plural = parts[1]
    if (before, plural) not in COLLECTIONS:
        raise KeyError(path)
    return plural, parts[0], parts[2] if len(parts) > 2 else None


class Handler(BaseHTTPRequestHandler):
    fake: FakeKubernetes

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(length)) if length else {}

    def _start(self) -> tuple[str, str, str | None, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        self.fake.requests.append((self.command, parts.path, query))
        return (*_route(parts.path), query)

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        collection, namespace, _, _ = self._start()
        body = self._body()
        name = body["metadata"]["name"]
        if (collection, namespace, name) in self.fake.objects:
            self._answer(409, _status(409, "AlreadyExists", f'{collection} "{name}" already exists'))
            return
        body["metadata"].update(namespace=namespace, uid=f"uid-{name}", creationTimestamp="2026-11-30T09:14:01Z")
        self.fake.add(collection, body)
        self._answer(201, body)

    def do_GET(self) -> None:  # noqa: N802
        collection, namespace, _, _ = self._start()
        selector = query_one(self._query(), "labelSelector")
        items = [
            obj
            for (kind, ns, _), obj in sorted(self.fake.objects.items())
            if kind == collection and ns == namespace and _matches(obj, selector)
        ]
        kind = COLLECTIONS[next(key for key in COLLECTIONS if key[1] == collection)]
        self._answer(200, {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})

    def do_DELETE(self) -> None:  # noqa: N802
        collection, namespace, name, _ = self._start()
        query = self._query()
        if name is None:  # deletecollection
            selector = query_one(query, "labelSelector")
            for (kind, ns, _), obj in self.fake.objects.items():
                if kind == collection and ns == namespace and _matches(obj, selector):
                    obj["metadata"]["deletionTimestamp"] = "2026-11-30T10:02:31Z"
                    obj["metadata"]["deletionGracePeriodSeconds"] = int(query_one(query, "gracePeriodSeconds") or 30)
            self._answer(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
            return
        if self.fake.objects.pop((collection, namespace, name), None) is None:
            self._answer(404, _status(404, "NotFound", f'{collection} "{name}" not found'))
            return
        self._answer(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    def _query(self) -> dict[str, list[str]]:
        return self.fake.requests[-1][2]


def query_one(query: dict[str, list[str]], name: str) -> str:
    return query.get(name, [""])[0]


@contextmanager
def fake_kubernetes() -> Iterator[FakeKubernetes]:
    fake = FakeKubernetes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("BoundHandler", (Handler,), {"fake": fake}))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
