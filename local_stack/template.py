"""Reads template.yaml and turns it into what the local stack runs.

Only the intrinsic functions the template uses are resolved: Ref, Fn::GetAtt,
Fn::Sub, Fn::Join, Fn::If (with Fn::Equals, Fn::Not, Fn::And, Fn::Or).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

ACCOUNT = "123456789012"


class TemplateError(ValueError):
    pass


@dataclass
class Function:
    logical_id: str
    name: str
    code_dir: Path
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]
    layer_dirs: list[Path]


@dataclass
class Route:
    method: str
    path: str
    function: str
    api_key_required: bool
    api: str = ""              # the logical id of the AWS::Serverless::Api that serves it
    pattern: re.Pattern = field(repr=False, default=None)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\+\\\}", r"(?P<\1>.+)", re.escape(self.path))
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", regex)
        self.pattern = re.compile(f"^{regex}$")


# API Gateway's own answers for the errors it gives before any function runs: the status
# and $context.error.message of each response type, and its x-amzn-ErrorType header. A
# missing route and a method a resource does not have are both MISSING_AUTHENTICATION_TOKEN.
GATEWAY_DEFAULTS = {"MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token",
                                                     "MissingAuthenticationTokenException"),
                    "INVALID_API_KEY": (403, "Forbidden", "ForbiddenException"),
                    "REQUEST_TOO_LARGE": (413, "Request Too Long", "RequestTooLargeException")}


@dataclass(frozen=True)
class GatewayResponse:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass
class EventSource:
    function: str
    kind: str                  # "Kinesis" or "DynamoDB"
    source_logical_id: str     # the stream or the table
    properties: dict[str, Any]


class Template:
    def __init__(self, path: Path, stack_name: str, region: str, parameters: dict[str, str] | None = None):
        self.path, self.root = Path(path), Path(path).resolve().parent
        self.stack_name, self.region = stack_name, region
        body, matches = decode(str(path))
        if body is None:
            raise TemplateError(f"{path}: {matches}")
        self.body = body
        self.resources: dict[str, dict] = body.get("Resources", {})
        self.parameters = {name: str(spec.get("Default", "")) for name, spec in body.get("Parameters", {}).items()}
        self.parameters.update(parameters or {})
        self.attributes: dict[tuple[str, str], str] = {}

    def of_type(self, resource_type: str) -> dict[str, dict]:
        return {k: v for k, v in self.resources.items() if v.get("Type") == resource_type}

    def physical_name(self, logical_id: str) -> str:
        name = f"{self.stack_name}-{logical_id}"
        return name.lower() if self.resources[logical_id]["Type"] == "AWS::S3::Bucket" else name

    def properties(self, logical_id: str) -> dict[str, Any]:
        return self.resolve(self.resources[logical_id].get("Properties", {}))

    # ---- intrinsic functions -------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value if not _no_value(v)]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(logical_id, attribute)
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::Join":
                return arg[0].join(str(self.resolve(v)) for v in arg[1])
            if key == "Fn::If":
                name, when_true, when_false = arg
                return self.resolve(when_true if self.condition(name) else when_false)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if not _no_value(v)}

    def ref(self, name: str) -> Any:
        pseudo = {"AWS::Region": self.region, "AWS::AccountId": ACCOUNT, "AWS::StackName": self.stack_name,
                  "AWS::URLSuffix": "amazonaws.com", "AWS::Partition": "aws", "AWS::NoValue": _NO_VALUE}
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name not in self.resources:
            raise TemplateError(f"Ref to unknown {name}")
        kind = self.resources[name]["Type"]
        if kind == "AWS::SQS::Queue":
            return self.get_att(name, "QueueUrl")
        return self.physical_name(name)

    def get_att(self, logical_id: str, attribute: str) -> str:
        if (logical_id, attribute) in self.attributes:
            return self.attributes[(logical_id, attribute)]
        if attribute != "Arn":
            raise TemplateError(f"{logical_id}.{attribute} is not known before the resource exists")
        service = {"AWS::Kinesis::Stream": ("kinesis", "stream/"), "AWS::SQS::Queue": ("sqs", ""),
                   "AWS::DynamoDB::Table": ("dynamodb", "table/"), "AWS::S3::Bucket": ("s3", ""),
                   "AWS::Serverless::Function": ("lambda", "function:")}.get(self.resources[logical_id]["Type"])
        if service is None:
            raise TemplateError(f"no local ARN for {logical_id}")
        if service[0] == "s3":
            return f"arn:aws:s3:::{self.physical_name(logical_id)}"
        return f"arn:aws:{service[0]}:{self.region}:{ACCOUNT}:{service[1]}{self.physical_name(logical_id)}"

    def sub(self, arg: Any) -> str:
        template, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                return str(self.get_att(*name.split(".", 1)))
            return str(self.ref(name))

        return re.sub(r"\$\{([^!}][^}]*)\}", replace, template)

    def condition(self, name: str) -> bool:
        return self._evaluate(self.body.get("Conditions", {})[name])

    def _evaluate(self, expression: Any) -> bool:
        (key, arg), = expression.items()
        if key == "Fn::Equals":
            return str(self.resolve(arg[0])) == str(self.resolve(arg[1]))
        if key == "Fn::Not":
            return not self._evaluate(arg[0])
        if key == "Fn::And":
            return all(self._evaluate(a) for a in arg)
        if key == "Fn::Or":
            return any(self._evaluate(a) for a in arg)
        if key == "Condition":
            return self.condition(arg)
        raise TemplateError(f"unsupported condition {key}")

    # ---- what the stack runs -------------------------------------------------
    def functions(self) -> dict[str, Function]:
        defaults = self.body.get("Globals", {}).get("Function", {})
        functions = {}
        for logical_id, resource in self.of_type("AWS::Serverless::Function").items():
            props = resource.get("Properties", {})
            environment = {**defaults.get("Environment", {}).get("Variables", {}),
                           **props.get("Environment", {}).get("Variables", {})}
            layers = props.get("Layers", defaults.get("Layers", []))
            functions[logical_id] = Function(
                logical_id=logical_id, name=self.physical_name(logical_id),
                code_dir=self.root / props["CodeUri"], handler=props.get("Handler", defaults.get("Handler")),
                timeout=int(self.resolve(props.get("Timeout", defaults.get("Timeout", 3)))),
                memory=int(self.resolve(props.get("MemorySize", defaults.get("MemorySize", 128)))),
                environment={k: str(v) for k, v in self.resolve(environment).items()},
                layer_dirs=[self._layer_dir(layer) for layer in layers])
        return functions

    def _layer_dir(self, layer: Any) -> Path:
        if not (isinstance(layer, dict) and "Ref" in layer):
            raise TemplateError(f"only layers of this template can run locally, not {layer}")
        return self.root / self.resources[layer["Ref"]]["Properties"]["ContentUri"]

    def routes(self) -> list[Route]:
        routes = []
        for logical_id, resource in self.of_type("AWS::Serverless::Function").items():
            for event in resource.get("Properties", {}).get("Events", {}).values():
                if event.get("Type") != "Api":
                    continue
                props = event["Properties"]
                api_id = props.get("RestApiId", {}).get("Ref", "")
                api = self.resources.get(api_id, {})
                required = api.get("Properties", {}).get("Auth", {}).get("ApiKeyRequired", False)
                required = props.get("Auth", {}).get("ApiKeyRequired", required)
                routes.append(Route(props["Method"].upper(), props["Path"], logical_id, bool(required), api_id))
        return routes

    def gateway_response(self, api: str, response_type: str) -> GatewayResponse:
        """What the API answers itself for one response type (GATEWAY_DEFAULTS): the API's
        GatewayResponses entry for the type, else its DEFAULT_4XX, else API Gateway's own."""
        status, message, error_type = GATEWAY_DEFAULTS[response_type]
        configured = self.resources.get(api, {}).get("Properties", {}).get("GatewayResponses", {})
        own, default = configured.get(response_type, {}), configured.get("DEFAULT_4XX", {})
        status = int(own.get("StatusCode", default.get("StatusCode", status)))
        body = (own.get("ResponseTemplates") or default.get("ResponseTemplates") or {}).get("application/json")
        if body is None:
            body = json.dumps({"message": message})
        body = (body.replace("$context.error.responseType", response_type)
                .replace("$context.error.messageString", json.dumps(message))
                .replace("$context.error.message", message))
        return GatewayResponse(status, body.encode(), {"Content-Type": "application/json",
                                                       "x-amzn-ErrorType": error_type})

    def event_sources(self) -> list[EventSource]:
        sources = []
        for logical_id, resource in self.of_type("AWS::Serverless::Function").items():
            for event in resource.get("Properties", {}).get("Events", {}).values():
                if event.get("Type") not in ("Kinesis", "DynamoDB"):
                    continue
                stream = event["Properties"]["Stream"]["Fn::GetAtt"]
                source = stream.split(".")[0] if isinstance(stream, str) else stream[0]
                sources.append(EventSource(logical_id, event["Type"], source, event["Properties"]))
        return sources


_NO_VALUE = object()


def _no_value(value: Any) -> bool:
    return value is _NO_VALUE
