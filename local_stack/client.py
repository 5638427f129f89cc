"""A small JSON client for the REST API (the demo loader and the tests use it)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode


class ApiClient:
    def __init__(self, url: str, api_key: str | None, headers: dict[str, str] | None = None) -> None:
        self.url, self.api_key, self.headers = url.rstrip("/"), api_key, dict(headers or {})

    def call(self, method: str, path: str, body: Any = None, query: dict | None = None,
             raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        url = self.url + path + (f"?{urlencode(query)}" if query else "")
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.api_key is not None:
            request.add_header("x-api-key", self.api_key)
        for name, value in self.headers.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            payload = error.read()
            try:
                return error.code, json.loads(payload)
            except ValueError:
                return error.code, payload.decode(errors="replace")

    def get(self, path: str, **query: Any) -> tuple[int, Any]:
        return self.call("GET", path, query={k: v for k, v in query.items() if v is not None} or None)

    def put(self, path: str, body: Any) -> tuple[int, Any]:
        return self.call("PUT", path, body)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.call("POST", path, body)

    def delete(self, path: str) -> tuple[int, Any]:
        return self.call("DELETE", path)
