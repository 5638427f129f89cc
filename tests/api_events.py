"""What API Gateway hands the API function, for tests that call its handler directly."""
from __future__ import annotations


def api_event(path: str, query: dict[str, str] | None = None, method: str = "GET", body: str | None = None,
              content_type: str = "application/json", path_parameters: dict[str, str] | None = None,
              headers: dict[str, str] | None = None) -> dict:
    """An API Gateway (REST) proxy event, as the gateway sends it: the path decoded."""
    query = query or {}
    return {"httpMethod": method, "path": path, "resource": path, "queryStringParameters": query or None,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} or None, "body": body,
            "headers": {"x-api-key": "k", "Content-Type": content_type, **(headers or {})}, "isBase64Encoded": False,
            "pathParameters": path_parameters,
            "requestContext": {"stage": "v1", "requestId": "r-1", "httpMethod": method, "resourcePath": path}}


class LambdaContext:
    function_name, memory_limit_in_mb, aws_request_id = "api", 1024, "r-1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
