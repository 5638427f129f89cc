"""The template's REST APIs on 127.0.0.1: each HTTP request becomes an API Gateway proxy event.

The template has two APIs (clients', admin) with a usage plan and key each; here both are
served on one port, and a route takes only the key of the API it belongs to. What API
Gateway answers itself (no such route or method, whatever the method's name; a missing or
wrong key; a body over 10 MB) is the API's GatewayResponses from the template
(`Template.gateway_response`).

While `loading` holds a body (the stack sets it until the demo is applied and every
function has read it), GET /health answers 503 with it instead of invoking the function.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from local_stack.runtime import FunctionError, FunctionPool
from local_stack.template import GatewayResponse, Route

log = logging.getLogger("local_stack")
MAX_BODY_BYTES = 10 * 1024 * 1024   # API Gateway's payload limit
HEALTH_PATH = "/health"
GatewayResponses = Callable[[str, str], GatewayResponse]  # (API logical id, response type) -> answer


class LocalApi:
    def __init__(self, routes: list[Route], functions: dict[str, FunctionPool], api_keys: dict[str, str], stage: str,
                 gateway_responses: GatewayResponses, host: str = "127.0.0.1", port: int = 3000) -> None:
        missing = {r.api for r in routes if r.api_key_required} - set(api_keys)
        if missing:
            raise ValueError(f"no API key for {sorted(missing)}")
        self.routes, self.functions, self.api_keys, self.stage = routes, functions, api_keys, stage
        self.gateway_responses = gateway_responses
        self.default_api = routes[0].api if routes else ""  # answers for a path no API has
        self.loading: dict | None = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def __getattr__(self, name: str):
                # http.server answers 501 for a method without a do_<METHOD>; API Gateway routes every method.
                if name.startswith("do_"):
                    return lambda: api.handle(self)
                raise AttributeError(name)

            def log_message(self, format: str, *args) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_port}"

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="api", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        path = unquote(url.path)
        length = int(request.headers.get("Content-Length") or 0)
        # Matched on the path as sent, then each parameter decoded: %2F stays inside its segment
        # (GET /items/1%2Fsimilar names item "1/similar"), as API Gateway's path parameters do.
        route, parameters = self._match(request.command, url.path)
        parameters = {name: unquote(value) for name, value in parameters.items()}
        if route is None:
            route, parameters = self._match(request.command, path)
        api = route.api if route else self._api_of(path)
        if length > MAX_BODY_BYTES:
            request.close_connection = True  # the body is not read
            return self._gateway(request, api, "REQUEST_TOO_LARGE")
        body = request.rfile.read(length).decode("utf-8", "replace") if length else None
        if route is None:
            return self._gateway(request, api, "MISSING_AUTHENTICATION_TOKEN")
        if route.api_key_required and request.headers.get("x-api-key") != self.api_keys[route.api]:
            return self._gateway(request, api, "INVALID_API_KEY")
        loading = self.loading
        if loading is not None and route.path == HEALTH_PATH:
            return _send(request, 503, json.dumps(loading).encode())
        event = self._event(request, route, path, parameters, url.query, body)
        try:
            response = self.functions[route.function].invoke(event)
        except FunctionError as error:
            log.error("%s %s: %s", request.command, path, error)
            return _send(request, 502, _error("internal_error", "the function failed; see its log"))
        headers = {**(response.get("headers") or {})}
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers[name] = values[-1]
        _send(request, int(response.get("statusCode", 200)), (response.get("body") or "").encode(), headers)

    def _gateway(self, request: BaseHTTPRequestHandler, api: str, response_type: str) -> None:
        answer = self.gateway_responses(api, response_type)
        _send(request, answer.status, answer.body, answer.headers)

    def _api_of(self, path: str) -> str:
        """The API whose resource the path is (a method it lacks), else the default one."""
        return next((r.api for r in self.routes if r.pattern.match(path)), self.default_api)

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        for route in self.routes:
            found = route.pattern.match(path)
            if found and route.method in (method, "ANY"):
                return route, found.groupdict()
        return None, {}

    def _event(self, request, route: Route, path: str, parameters: dict, query: str, body: str | None) -> dict:
        multi_query = parse_qs(query, keep_blank_values=True)
        multi_headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            multi_headers.setdefault(name, []).append(value)
        return {
            "resource": route.path, "path": path, "httpMethod": request.command,
            "headers": {k: v[-1] for k, v in multi_headers.items()}, "multiValueHeaders": multi_headers,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": parameters or None, "stageVariables": None,
            "requestContext": {
                "resourcePath": route.path, "httpMethod": request.command, "path": f"/{self.stage}{path}",
                "stage": self.stage, "requestId": str(uuid.uuid4()), "accountId": "123456789012",
                "apiId": "local", "protocol": "HTTP/1.1", "requestTimeEpoch": int(time.time() * 1000),
                "identity": {"sourceIp": request.client_address[0], "userAgent": request.headers.get("User-Agent"),
                             "apiKey": request.headers.get("x-api-key")}},
            "body": body, "isBase64Encoded": False,
        }


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _send(request: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict | None = None) -> None:
    request.send_response(status)
    headers = {"Content-Type": "application/json", **(headers or {})}
    for name, value in headers.items():
        if name.lower() != "content-length":
            request.send_header(name, str(value))
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(body)
