"""The whole system on one machine: moto server, the template's resources, functions,
event-source mappings and REST API."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from local_stack.apigateway import HEALTH_PATH, LocalApi
from local_stack.event_sources import DynamoDBStreamReader, EventSourceMapping, KinesisReader
from local_stack.provision import clients, provision
from local_stack.runtime import FunctionPool, function_environment
from local_stack.template import Template
from recsys.live import ITEMS_REFRESH_SECONDS, POPULARITY_REFRESH_SECONDS

log = logging.getLogger("local_stack")
ROOT = Path(__file__).resolve().parent.parent
API_CONCURRENCY = 2
# The template's two APIs: the clients' (recommendations, events) and the admin one.
CLIENT_API, ADMIN_API = "RecsysApi", "RecsysAdminApi"
# Once the streams are drained, a warm function reads what they wrote within this long: the
# popularity counters and the items changed are read again at most this long after they were.
SETTLE_SECONDS = max(ITEMS_REFRESH_SECONDS, POPULARITY_REFRESH_SECONDS) + 0.5
# Ctrl-C: everything the stack started is gone within this long.
STOP_SECONDS = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """moto's server in its own process, on loopback."""

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "local_stack.moto_server",
                                         "-H", "127.0.0.1", "-p", str(self.port)],
                                         cwd=ROOT, stdout=self._log, stderr=self._log,
                                         start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1)
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"moto server exited; see {log_path}") from None
                time.sleep(0.1)
        raise RuntimeError("moto server did not start within 60 s")

    def stop(self) -> None:
        """Killed: the server holds nothing that outlives the stack."""
        self.process.kill()
        self.process.wait()
        self._log.close()


class LocalStack:
    """The template on one machine. It answers GET /health with 503 {"status": "loading"}
    until `ready()`: call it once what it should serve is loaded (load_demo does)."""

    def __init__(self, api_key: str, admin_key: str, port: int = 3000, template_path: Path = ROOT / "template.yaml",
                 region: str = "us-east-1", stack_name: str = "recsys-local", log_dir: Path = ROOT / "build" / "logs",
                 parameters: dict[str, str] | None = None, model_dir: Path | None = None):
        """`model_dir`: the encoder artifact every function loads (RECSYS_MODEL_DIR) in place of
        the encoder layer's, as a deployment that ships another encoder in that layer would."""
        if api_key == admin_key:
            raise ValueError("the admin key must differ from the clients' key")
        self.api_key, self.admin_key, self.port, self.region = api_key, admin_key, port, region
        self.template = Template(template_path, stack_name, region, parameters)
        self.log_dir = log_dir
        self.model_dir = model_dir
        self.moto: MotoServer | None = None
        self.pools: dict[str, FunctionPool] = {}
        self.mappings: dict[str, EventSourceMapping] = {}
        self.api: LocalApi | None = None

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        # moto accepts any credentials; this process's own clients (the demo loader) need some.
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.moto = MotoServer(self.log_dir / "moto.log")
        self.aws = clients(self.moto.url, self.region)
        provision(self.template, self.aws)
        functions = self.template.functions()
        for logical_id, function in functions.items():
            environment = function_environment(self.template, function, self.moto.url)
            if self.model_dir is not None:
                environment["RECSYS_MODEL_DIR"] = str(self.model_dir)
            concurrency = API_CONCURRENCY if any(r.function == logical_id for r in self.template.routes()) else 1
            self.pools[logical_id] = FunctionPool(function, environment, self.log_dir / f"{logical_id}.log",
                                                  concurrency)
        for source in self.template.event_sources():
            self.mappings[source.function] = self._mapping(source)
        for mapping in self.mappings.values():
            mapping.start()
        self._write_env_file()
        stage = self.template.resolve(self.template.resources[CLIENT_API]["Properties"].get("StageName", "v1"))
        keys = {CLIENT_API: self.api_key, ADMIN_API: self.admin_key}
        self.api = LocalApi(self.template.routes(), self.pools, keys, stage, self.template.gateway_response,
                            port=self.port)
        self.loading("the stack to start")
        self.api.start()

    def loading(self, what: str) -> None:
        """GET /health answers 503 {"status": "loading", "waiting_for": what} until `ready()`."""
        if self.api:
            self.api.loading = {"status": "loading", "waiting_for": [what]}

    def drain(self, timeout: float = 600) -> float:
        """Waits until every event-source mapping has handled every record put on its
        stream so far (the pollers read to the end and delivered it); returns the seconds waited."""
        since = time.monotonic()
        while not all(m.caught_up(since) for m in self.mappings.values()):
            if time.monotonic() - since > timeout:
                late = [m.name for m in self.mappings.values() if not m.caught_up(since)]
                raise RuntimeError(f"the streams were not drained in {timeout:.0f} s: {', '.join(late)}")
            time.sleep(0.05)
        return time.monotonic() - since

    def ready(self, timeout: float = 600) -> None:
        """Drains the streams, gives the warm functions SETTLE_SECONDS to read what they
        wrote, then lets GET /health through to the function (200 once it has loaded)."""
        self.loading("the streams to drain")
        self.drain(timeout)
        self.loading("the functions to read the streams' writes")
        time.sleep(SETTLE_SECONDS)
        self.api.loading = None
        log.info("ready: %s is served by the function", HEALTH_PATH)

    def _mapping(self, source) -> EventSourceMapping:
        properties = self.template.resolve(source.properties)
        stream_arn = properties["Stream"]
        if source.kind == "Kinesis":
            reader = KinesisReader(self.aws["kinesis"], stream_arn, self.region)
        else:
            reader = DynamoDBStreamReader(self.aws["dynamodbstreams"], stream_arn, self.region)
        destination = properties.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        dead_letter_url = None
        if destination:
            queue_name = destination.rsplit(":", 1)[-1]
            dead_letter_url = self.aws["sqs"].get_queue_url(QueueName=queue_name)["QueueUrl"]
        return EventSourceMapping(f"{source.function}<-{source.source_logical_id}", reader, self.pools[source.function],
                                  properties, self.aws["sqs"], dead_letter_url,
                                  self.template.get_att(source.function, "Arn"))

    def mappings_reading(self, source_logical_id: str) -> list[EventSourceMapping]:
        """The event-source mappings that poll one stream or table (every consumer of it)."""
        return [self.mappings[s.function] for s in self.template.event_sources()
                if s.source_logical_id == source_logical_id]

    def _write_env_file(self) -> None:
        """Names and endpoint of this stack, and the functions' encoder when not the layer's, for
        `python -m ops --local`."""
        names = {}
        for pool in self.pools.values():
            names.update({k: v for k, v in pool.environment.items()
                          if k.isupper() and k.startswith(("AWS_", "PROFILES", "ITEMS", "EVENTS", "ARTIFACTS",
                                                           "RAW_EVENTS", "IMPRESSIONS", "METRICS",
                                                           "USER_TOKEN", "RECSYS_MODEL_DIR"))
                          and not k.startswith("AWS_LAMBDA")})
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(names.items())))

    def environment_of(self, logical_id: str) -> dict[str, str]:
        return self.pools[logical_id].environment

    @property
    def env_file(self) -> Path:
        return self.log_dir.parent / "local-stack.env"

    def stop(self) -> None:
        """Within STOP_SECONDS whatever it is doing: the pollers stop retrying, the workers are
        killed (an invocation in flight fails), then the API and moto go."""
        deadline = time.monotonic() + STOP_SECONDS
        self.env_file.unlink(missing_ok=True)
        for mapping in self.mappings.values():
            mapping.signal_stop()
        for pool in self.pools.values():
            pool.stop()
        if self.api:
            self.api.stop()
        for mapping in self.mappings.values():
            mapping.stop(deadline)
        if self.moto:
            self.moto.stop()

    def kill(self) -> None:
        """The last resort (stop took too long): kill every process the stack started, now."""
        for pool in self.pools.values():
            pool.kill()
        if self.moto and self.moto.process.poll() is None:
            self.moto.process.kill()

    @property
    def url(self) -> str:
        return self.api.url


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("werkzeug", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
