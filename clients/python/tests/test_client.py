"""memaudit_client against real memaudit-server processes.

The oracle is the C++ CLI: the same audit (same model, conditions, seeds)
run through `memaudit audit --json` must give the same verdicts, and the
CLI's --fail-on exit code must equal Gate.exit_code. Binaries and paths come
from the environment CTest sets (clients/python/CMakeLists.txt).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

from memaudit_client import Client, Gate, MemauditError, Verdict, pb

SERVER = os.environ["MEMAUDIT_SERVER_BINARY"]
CLI = os.environ["MEMAUDIT_CLI_BINARY"]
TOY = os.environ["MEMAUDIT_TOY_BINARY"]
SOURCE_DIR = os.environ["MEMAUDIT_SOURCE_DIR"]
EXAMPLE = os.path.join(SOURCE_DIR, "clients/python/examples/release_gate.py")


class Server:
    """memaudit-server on ephemeral loopback ports over `repository`."""

    def __init__(self, repository, scratch, *extra):
        self.scratch = scratch
        ports = os.path.join(scratch, "ports")
        self.log_path = os.path.join(scratch, "server.log")
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [SERVER, f"--model_repository={repository}", "--listen=127.0.0.1:0",
             "--metrics_listen=127.0.0.1:0", f"--port_file={ports}", "--threads=2", *extra],
            stderr=self.log, stdout=self.log)
        deadline = time.monotonic() + 60
        self.port = 0
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with open(ports) as f:
                    fields = f.read().split()
                if len(fields) == 2:
                    self.port = int(fields[0])
                    break
            except OSError:
                pass
            time.sleep(0.05)
        if not self.port:
            raise RuntimeError("memaudit-server did not start: " + self.log_text())

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    def log_text(self):
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def write_models(repository):
    """gmm: a random class-conditional Gaussian mixture (2 classes, d = 2);
    copies: the exact model of three points (every sample a copy)."""
    os.makedirs(repository, exist_ok=True)
    points = os.path.join(repository, "points.pt")
    subprocess.run([sys.executable, "-c",
                    "import sys, torch; torch.save(torch.tensor([[1.0, 2.0], [3.0, -1.0], "
                    "[-2.0, 0.5]], dtype=torch.float64), sys.argv[1])", points], check=True)
    for args in (["gmm", "--name", "gmm", "--dim", "2", "--components", "3", "--classes", "2",
                  "--seed", "3"],
                 ["empirical", "--name", "copies", "--points", points]):
        subprocess.run([TOY, *args, "--repository", repository], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class PlaintextTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.scratch = tempfile.mkdtemp(prefix="memaudit-python-")
        repository = os.path.join(cls.scratch, "models")
        write_models(repository)
        cls.server = Server(repository, cls.scratch)
        cls.client = Client(cls.server.target, timeout=60)
        cls.client.wait_until_serving(60)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()
        shutil.rmtree(cls.scratch, ignore_errors=True)

    def cli(self, *args):
        return subprocess.run([CLI, "--server", self.server.target, *args],
                              capture_output=True, text=True, timeout=240)

    def test_health_and_models(self):
        self.assertEqual(self.client.health(), "SERVING")
        names = [m.name for m in self.client.models()]
        self.assertIn("gmm", names)
        self.assertEqual(self.client.model("gmm").dimension, 2)

    def audit_and_compare_with_the_cli(self, model, classes):
        """The client's report of an audit equals the CLI's of the same
        audit, and each gate exits as the CLI's --fail-on does."""
        progress = []
        samples = []
        request = Client.audit_request(model, class_labels=classes, samples_per_condition=6,
                                       seed=11, steps=20)
        job_id = self.client.submit(request)
        job = self.client.watch(job_id, on_progress=progress.append, on_sample=samples.append)
        self.assertEqual(job.state, pb.JOB_SUCCEEDED, job.error)
        report = self.client.report(job_id)
        total = 6 * max(1, len(classes))
        self.assertTrue(progress, "no progress events")
        self.assertEqual(progress[-1].samples_done, total)
        self.assertEqual(len(samples), total)
        self.assertEqual(report.total_samples, total)

        args = ["audit", "--model", model, "--samples", "6", "--seed", "11", "--steps", "20",
                "--quiet"]
        for label in classes:
            args += ["--class", str(label)]
        cli = self.cli(*args, "--json", "--fail-on", "never")
        self.assertEqual(cli.returncode, 0, cli.stderr)
        expected = json.loads(cli.stdout)
        self.assertEqual(Verdict(report.verdict).name, expected["verdict"])
        self.assertEqual(len(report.conditions), len(expected["conditions"]))
        for got, want in zip(report.conditions, expected["conditions"]):
            self.assertEqual(Verdict(got.verdict).name, want["verdict"])
            self.assertEqual([s.seed for s in got.samples], [s["seed"] for s in want["samples"]])
            self.assertEqual([Verdict(s.verdict).name for s in got.samples],
                             [s["verdict"] for s in want["samples"]])
        for gate in Gate:
            gated = self.cli(*args, "--fail-on", gate.value)
            self.assertEqual(gated.returncode, gate.exit_code(report), (gate, gated.stderr))
        return report

    def test_audit_equals_the_cli_and_gates_alike(self):
        self.audit_and_compare_with_the_cli("gmm", [0, 1])
        # Every sample of the three-point model is a copy: the gate fails.
        copies = self.audit_and_compare_with_the_cli("copies", [])
        self.assertEqual(Verdict(copies.verdict), Verdict.MEMORIZED)
        self.assertEqual(Gate.MEMORIZED.exit_code(copies), 3)

    def test_errors_carry_the_code_and_name_the_field(self):
        with self.assertRaises(MemauditError) as unknown:
            self.client.submit(Client.audit_request("no_such_model"))
        self.assertEqual(unknown.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("no_such_model", unknown.exception.message)
        with self.assertRaises(MemauditError) as bad:
            self.client.submit(Client.audit_request("gmm", class_labels=[7]))
        self.assertEqual(bad.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("conditions", bad.exception.message)

    def test_a_cancelled_audit_has_no_report(self):
        job_id = self.client.submit(Client.audit_request(
            "gmm", class_labels=[0, 1], samples_per_condition=2000, steps=200))
        self.client.cancel(job_id)
        job = self.client.watch(job_id)
        self.assertEqual(job.state, pb.JOB_CANCELLED)
        with self.assertRaises(MemauditError) as no_report:
            self.client.report(job_id)
        self.assertEqual(no_report.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("JOB_CANCELLED", no_report.exception.message)

    def test_an_audit_its_caller_abandons_is_cancelled(self):
        # An exception out of on_progress (as Ctrl-C's KeyboardInterrupt
        # would be) leaves nobody following the job: audit() cancels it.
        submitted = []
        submit = self.client.submit
        self.client.submit = lambda request: submitted.append(submit(request)) or submitted[-1]

        class Abandoned(Exception):
            pass

        def give_up(progress):
            raise Abandoned()

        try:
            with self.assertRaises(Abandoned):
                self.client.audit("gmm", class_labels=[0, 1], samples_per_condition=2000,
                                  steps=200, on_progress=give_up)
        finally:
            del self.client.submit
        self.assertEqual(len(submitted), 1)
        job = self.client.watch(submitted[0])
        self.assertEqual(job.state, pb.JOB_CANCELLED, job.error)

    def test_the_release_gate_example_exits_as_the_cli_does(self):
        env = dict(os.environ)
        report_path = os.path.join(self.scratch, "gate.json")
        run = subprocess.run([sys.executable, EXAMPLE, "--server", self.server.target,
                              "--model", "gmm", "--class", "0", "--samples", "4", "--seed", "3",
                              "--steps", "20", "--fail-on", "partial", "--report", report_path],
                             capture_output=True, text=True, env=env, timeout=240)
        cli = self.cli("audit", "--model", "gmm", "--class", "0", "--samples", "4", "--seed", "3",
                       "--steps", "20", "--quiet", "--fail-on", "partial")
        self.assertIn(run.returncode, (0, 3), run.stderr)
        self.assertEqual(run.returncode, cli.returncode, run.stderr + cli.stderr)
        with open(report_path) as f:
            self.assertEqual(json.load(f)["model"], "gmm")
        self.assertIn("model gmm:", run.stdout)

    def test_training_items_are_not_served_by_default(self):
        with self.assertRaises(MemauditError) as off:
            self.client.training_items("copies", [0])
        self.assertEqual(off.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("--serve_training_items", off.exception.message)

    def test_unreachable_server_is_unavailable(self):
        with Client("127.0.0.1:1", timeout=2) as client:
            with self.assertRaises(MemauditError) as down:
                client.models()
        self.assertEqual(down.exception.code, grpc.StatusCode.UNAVAILABLE)


def token_line(name, role, token):
    return f"{name} {role} sha256:{hashlib.sha256(token.encode()).hexdigest()}\n"


class TlsAndTokenTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.scratch = tempfile.mkdtemp(prefix="memaudit-python-tls-")
        cls.certs = os.path.join(cls.scratch, "certs")
        subprocess.run(["bash", os.path.join(SOURCE_DIR, "tests/make_test_certs.sh"), cls.certs],
                       check=True, capture_output=True)
        repository = os.path.join(cls.scratch, "models")
        write_models(repository)
        tokens = os.path.join(cls.scratch, "tokens")
        with open(tokens, "w") as f:
            f.write(token_line("pipeline", "audit", "audit-token"))
            f.write(token_line("release-reviewer", "reviewer", "reviewer-token"))
        cls.token_file = os.path.join(cls.scratch, "client-token")
        with open(cls.token_file, "w") as f:
            f.write("audit-token\n")
        cls.server = Server(repository, cls.scratch, f"--tls_cert={cls.cert('server.pem')}",
                            f"--tls_key={cls.cert('server.key')}",
                            f"--tls_client_ca={cls.cert('ca.pem')}", f"--token_file={tokens}",
                            "--serve_training_items")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.scratch, ignore_errors=True)

    @classmethod
    def cert(cls, name):
        return os.path.join(cls.certs, name)

    def connect(self, **security):
        return Client(self.server.target, timeout=30, server_name="localhost", **security)

    def test_mutual_tls_with_a_token_audits(self):
        with self.connect(ca_cert=self.cert("ca.pem"), client_cert=self.cert("client.pem"),
                          client_key=self.cert("client.key"),
                          token_file=self.token_file) as client:
            client.wait_until_serving(60)
            report = client.audit("gmm", class_labels=[1], samples_per_condition=2, steps=10)
            self.assertEqual(report.total_samples, 2)

    def mtls(self, **token):
        return self.connect(ca_cert=self.cert("ca.pem"), client_cert=self.cert("client.pem"),
                            client_key=self.cert("client.key"), **token)

    def test_a_reviewer_sees_the_training_item_a_copy_copies(self):
        with self.mtls(token="reviewer-token") as reviewer:
            reviewer.wait_until_serving(60)
            report = reviewer.audit("copies", samples_per_condition=3, seed=1, steps=20)
            nearest = [s.nearest.index for s in report.conditions[0].samples]
            items, decoded = reviewer.training_items("copies", nearest)
            self.assertFalse(decoded)
            points = {0: (1.0, 2.0), 1: (3.0, -1.0), 2: (-2.0, 0.5)}
            for index, item in zip(nearest, items):
                self.assertEqual(tuple(item.tolist()), points[index])
            self.assertTrue(all(s.nearest.is_copy for s in report.conditions[0].samples))
            with self.assertRaises(MemauditError) as outside:
                reviewer.training_items("copies", [3])
            self.assertEqual(outside.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("indices[0]", outside.exception.message)
            with self.assertRaises(MemauditError) as none:
                reviewer.training_items("gmm", [0])
            self.assertEqual(none.exception.code, grpc.StatusCode.FAILED_PRECONDITION)

    def test_the_audit_role_may_not_read_training_items(self):
        with self.mtls(token="audit-token") as auditor:
            with self.assertRaises(MemauditError) as refused:
                auditor.training_items("copies", [0])
        self.assertEqual(refused.exception.code, grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("reviewer role", refused.exception.message)

    def test_without_a_token_the_call_is_unauthenticated(self):
        with self.connect(ca_cert=self.cert("ca.pem"), client_cert=self.cert("client.pem"),
                          client_key=self.cert("client.key")) as client:
            with self.assertRaises(MemauditError) as refused:
                client.models()
        self.assertEqual(refused.exception.code, grpc.StatusCode.UNAUTHENTICATED)

    def test_a_server_signed_by_another_ca_is_refused(self):
        with self.connect(ca_cert=self.cert("other-ca.pem"), client_cert=self.cert("client.pem"),
                          client_key=self.cert("client.key"),
                          token_file=self.token_file) as client:
            with self.assertRaises(MemauditError) as refused:
                client.models()
        self.assertEqual(refused.exception.code, grpc.StatusCode.UNAVAILABLE)

    def test_bad_security_arguments_name_the_problem(self):
        with self.assertRaisesRegex(ValueError, "client_cert and client_key"):
            Client(self.server.target, client_cert=self.cert("client.pem"))
        with self.assertRaisesRegex(ValueError, "token_file: cannot read"):
            Client(self.server.target, token_file="/nonexistent/token")
        empty = os.path.join(self.scratch, "empty-token")
        open(empty, "w").close()
        with self.assertRaisesRegex(ValueError, "holds no token"):
            Client(self.server.target, token_file=empty)


if __name__ == "__main__":
    unittest.main()
