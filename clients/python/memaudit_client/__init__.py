"""A typed Python client for memaudit-server, for release pipelines.

    from memaudit_client import Client, Gate

    with Client("memaudit:50051", token_file="/run/secrets/memaudit-token",
                ca_cert="ca.pem") as client:
        report = client.audit("my-model", prompts=["a photo of ..."],
                              samples_per_condition=16, guidance=7.5,
                              on_progress=lambda p: print(p.samples_done, "/", p.samples_total))
        raise SystemExit(Gate.MEMORIZED.exit_code(report))

The protocol buffers are generated from proto/ at build time (CMake writes
them to build/clients/python); put that directory and this one on
PYTHONPATH. Runtime: Debian's python3-grpcio and python3-protobuf.

Errors from the server raise MemauditError with the gRPC status code and
the server's message, which names the offending field.
"""

from __future__ import annotations

import enum
import os
import time
from typing import Callable, Iterable, Optional, Sequence

try:
    import grpc
except ImportError as e:  # pragma: no cover - depends on the machine
    raise ImportError("memaudit_client needs gRPC for Python (Debian: apt install python3-grpcio)") from e

try:
    from memaudit.v1 import audit_service_pb2 as pb
    from memaudit.v1 import audit_service_pb2_grpc as pb_grpc
    from memaudit.v1 import model_service_pb2 as model_pb
    from memaudit.v1 import model_service_pb2_grpc as model_pb_grpc
    from memaudit.v1 import tensor_pb2
    from memaudit_health import health_pb2, health_pb2_grpc
except ImportError as e:  # pragma: no cover - depends on the build
    raise ImportError(
        "memaudit_client: the generated protocol buffers are missing; build the project "
        "(scripts/build.sh writes them to build/clients/python) and put that directory on "
        "PYTHONPATH") from e

__all__ = ["Client", "Gate", "MemauditError", "Verdict", "pb", "model_pb", "tensor_to_numpy"]

# How often an open stream pings a silent server, as the C++ client does:
# a frozen server ends the watch with UNAVAILABLE instead of hanging.
_KEEPALIVE_MS = 20000

# How long a best-effort cancel of a job nobody follows any more may take.
_CANCEL_TIMEOUT_SECONDS = 5.0


class Verdict(enum.IntEnum):
    """memaudit.v1.Verdict, ordered by severity."""
    UNSPECIFIED = pb.VERDICT_UNSPECIFIED
    NOT_MEMORIZED = pb.NOT_MEMORIZED
    PARTIAL = pb.PARTIAL
    MEMORIZED = pb.MEMORIZED


class Gate(enum.Enum):
    """The release gate of `memaudit audit --fail-on`: which verdict fails."""
    MEMORIZED = "memorized"
    PARTIAL = "partial"
    NEVER = "never"

    def fails(self, report: "pb.AuditReport") -> bool:
        """Whether the report's model verdict reaches the gate."""
        verdict = Verdict(report.verdict)
        if self is Gate.MEMORIZED:
            return verdict >= Verdict.MEMORIZED
        if self is Gate.PARTIAL:
            return verdict >= Verdict.PARTIAL
        return False

    def exit_code(self, report: "pb.AuditReport") -> int:
        """3 when the gate fails, else 0: the CLI's exit codes."""
        return 3 if self.fails(report) else 0


class MemauditError(Exception):
    """A call the server refused or could not finish: the gRPC status code
    (grpc.StatusCode) and the server's message."""

    def __init__(self, code: "grpc.StatusCode", message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def tensor_to_numpy(tensor):
    """A memaudit.v1.Tensor as a numpy array (needs numpy)."""
    import numpy
    dtypes = {tensor_pb2.FLOAT32: numpy.float32, tensor_pb2.FLOAT64: numpy.float64,
              tensor_pb2.INT64: numpy.int64}
    if tensor.dtype not in dtypes:
        raise ValueError(f"tensor dtype {tensor.dtype} is not one memaudit writes")
    return numpy.frombuffer(tensor.data, dtype=dtypes[tensor.dtype]).reshape(tuple(tensor.shape))


def _read(path: Optional[str], what: str) -> Optional[bytes]:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{what}: cannot read {path!r}: {e.strerror}") from e


class Client:
    """One channel to memaudit-server. Thread-safe as gRPC channels are.

    target: "host:port". TLS when ca_cert (or client_cert) is given, with
    client_cert/client_key for mutual TLS; a bearer token from `token` or
    the first line of `token_file`. `timeout` (seconds) bounds every unary
    call; streams (watch) run until the job ends, with keepalive pings, and
    are reopened while the server is unreachable for up to
    `reconnect_seconds` in a row.
    """

    def __init__(self, target: str, *, timeout: float = 60.0, token: Optional[str] = None,
                 token_file: Optional[str] = None, ca_cert: Optional[str] = None,
                 client_cert: Optional[str] = None, client_key: Optional[str] = None,
                 server_name: Optional[str] = None, reconnect_seconds: float = 60.0):
        if token is not None and token_file is not None:
            raise ValueError("give token or token_file, not both")
        if token_file is not None:
            lines = (_read(token_file, "token_file") or b"").decode("utf-8").splitlines()
            token = lines[0].strip() if lines else ""
            if not token:
                raise ValueError(f"token_file: {token_file!r} holds no token on its first line")
        if (client_cert is None) != (client_key is None):
            raise ValueError("client_cert and client_key go together (mutual TLS)")
        options = [("grpc.keepalive_time_ms", _KEEPALIVE_MS),
                   ("grpc.keepalive_timeout_ms", _KEEPALIVE_MS),
                   ("grpc.keepalive_permit_without_calls", 0),
                   ("grpc.http2.max_pings_without_data", 0),
                   ("grpc.max_receive_message_length", 256 << 20)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if ca_cert is not None or client_cert is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(ca_cert, "ca_cert"),
                private_key=_read(client_key, "client_key"),
                certificate_chain=_read(client_cert, "client_cert"))
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout if timeout and timeout > 0 else None
        self._reconnect_seconds = reconnect_seconds
        self._audits = pb_grpc.AuditServiceStub(self._channel)
        self._models = model_pb_grpc.ModelServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout: Optional[float] = None):
        try:
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise MemauditError(e.code(), e.details() or "") from None

    # Health and models.

    def health(self, service: str = "") -> str:
        """grpc.health.v1 status of `service` ("" overall): "SERVING", ..."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout: float = 60.0) -> None:
        """Returns once the server reports SERVING (its first model load pass
        is over), waiting at most `timeout` seconds, also for a server that
        is not listening yet. DEADLINE_EXCEEDED otherwise."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
            stream = self._health.Watch(health_pb2.HealthCheckRequest(), timeout=timeout,
                                        metadata=self._metadata, wait_for_ready=True)
            for response in stream:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    stream.cancel()
                    return
        except grpc.FutureTimeoutError:
            raise MemauditError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"no server listening within {timeout} s") from None
        except grpc.RpcError as e:
            raise MemauditError(e.code(), e.details() or "") from None
        raise MemauditError(grpc.StatusCode.UNAVAILABLE, "the health stream ended")

    def models(self) -> Sequence["model_pb.ModelInfo"]:
        return list(self._call(self._models.ListModels, model_pb.ListModelsRequest()).models)

    def model(self, name: str) -> "model_pb.ModelInfo":
        return self._call(self._models.GetModel, model_pb.GetModelRequest(name=name))

    def training_items(self, model: str, indices: Sequence[int]):
        """Reference-set items (training data) by index, e.g. the
        NearestNeighbor.index of a flagged sample, as numpy arrays, and
        whether they were decoded from latents. Needs the reviewer (or
        admin) role and a server run with --serve_training_items."""
        response = self._call(self._models.GetTrainingItems,
                              model_pb.GetTrainingItemsRequest(model=model, indices=list(indices)))
        return [tensor_to_numpy(item) for item in response.items], response.decoded

    # Audits.

    @staticmethod
    def audit_request(model: str, *, prompts: Iterable[str] = (),
                      class_labels: Iterable[int] = (), samples_per_condition: int = 0,
                      seed: int = 0, guidance: Optional[float] = None, steps: int = 0,
                      steps_offset: int = 0, early_only: bool = False,
                      label_free_metric: str = "") -> "pb.AuditRequest":
        """An AuditRequest from the common fields (0 / "" leave the server's
        defaults). For anything else build pb.AuditRequest yourself."""
        request = pb.AuditRequest(model=model, samples_per_condition=samples_per_condition,
                                  seed=seed, early_only=early_only,
                                  label_free_metric=label_free_metric)
        for prompt in prompts:
            request.conditions.add(prompt=prompt)
        for label in class_labels:
            request.conditions.add(class_label=label)
        request.sampling.num_steps = steps
        request.sampling.steps_offset = steps_offset
        if guidance is not None:
            request.sampling.guidance_scale = guidance
        return request

    def submit(self, request: "pb.AuditRequest") -> str:
        """Queues the audit; returns its job id."""
        return self._call(self._audits.SubmitAudit, request).id

    def get(self, job_id: str) -> "pb.AuditJob":
        return self._call(self._audits.GetAudit, pb.GetAuditRequest(id=job_id))

    def cancel(self, job_id: str) -> "pb.AuditJob":
        return self._call(self._audits.CancelAudit, pb.CancelAuditRequest(id=job_id))

    def watch(self, job_id: str,
              on_progress: Optional[Callable[["pb.AuditProgress"], None]] = None,
              on_sample: Optional[Callable[["pb.SampleReport"], None]] = None) -> "pb.AuditJob":
        """Follows the job to its end, calling on_progress for each progress
        event and on_sample for each finished sample; returns the final job.
        A stream that breaks (server restart, network) is reopened from the
        start, for up to `reconnect_seconds` of failing in a row (a server
        restarting with --state_dir resumes the job meanwhile): the server replays the job's
        events, and neither finished samples nor progress already reported
        are repeated to the callbacks."""
        seen_samples = 0
        seen_done = -1
        failing_since = None  # time.monotonic() of the first failure in a row
        pause = 0.25
        while True:
            samples = 0
            try:
                stream = self._audits.WatchAudit(pb.WatchAuditRequest(id=job_id),
                                                 metadata=self._metadata)
                for event in stream:
                    failing_since, pause = None, 0.25
                    kind = event.WhichOneof("event")
                    if kind == "progress":
                        if on_progress is not None and event.progress.samples_done >= seen_done:
                            seen_done = event.progress.samples_done
                            on_progress(event.progress)
                    elif kind == "sample":
                        samples += 1
                        if samples > seen_samples:
                            seen_samples = samples
                            if on_sample is not None:
                                on_sample(event.sample)
                    elif kind == "finished":
                        return event.finished
            except grpc.RpcError as e:
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if (e.code() != grpc.StatusCode.UNAVAILABLE
                        or now - failing_since > self._reconnect_seconds):
                    raise MemauditError(e.code(), e.details() or "") from None
                time.sleep(pause)
                pause = min(2 * pause, 4.0)
            else:
                return self.get(job_id)  # the stream ended without a final event

    def report(self, job_id: str) -> "pb.AuditReport":
        """The report of a finished job; MemauditError FAILED_PRECONDITION
        (with the job's error) when it failed, was cancelled or is running."""
        job = self.get(job_id)
        return _report_of(job)

    def audit(self, model: str, *, request: Optional["pb.AuditRequest"] = None,
              on_progress: Optional[Callable[["pb.AuditProgress"], None]] = None,
              **fields) -> "pb.AuditReport":
        """Submits an audit (`request`, or one built by audit_request from
        `fields`), follows it, and returns its report."""
        if request is None:
            request = self.audit_request(model, **fields)
        elif fields:
            raise ValueError("give a request or its fields, not both")
        job_id = self.submit(request)
        try:
            job = self.watch(job_id, on_progress=on_progress)
        except BaseException:
            # Ctrl-C (KeyboardInterrupt), an exception from on_progress, a
            # lost server: nobody follows the job any more, so it is
            # cancelled (best effort, briefly), as the CLI cancels it.
            try:
                self._call(self._audits.CancelAudit, pb.CancelAuditRequest(id=job_id),
                           timeout=_CANCEL_TIMEOUT_SECONDS)
            except MemauditError:
                pass
            raise
        return _report_of(job)


def _report_of(job: "pb.AuditJob") -> "pb.AuditReport":
    if job.state == pb.JOB_SUCCEEDED:
        return job.report
    state = pb.JobState.Name(job.state)
    raise MemauditError(grpc.StatusCode.FAILED_PRECONDITION,
                        f"audit {job.id} is {state}" + (f": {job.error}" if job.error else ""))
