"""Tests of `make ami` (scripts/ami.py) and of the worker image check (scripts/worker-image).

CloudFormation and S3 are moto's, in process; Image Builder is not supported by moto, so its
two calls are botocore stubs with the responses AWS documents.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import boto3
from botocore.stub import ANY, Stubber
from moto import mock_aws

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ami  # noqa: E402

REPO = Path(__file__).resolve().parent.parent.parent
PIPELINE_ARN = "arn:aws:imagebuilder:eu-west-1:123456789012:image-pipeline/barge-dev-worker"
IMAGE_ARN = "arn:aws:imagebuilder:eu-west-1:123456789012:image/barge-dev-worker-abc/1.0.0/3"


def stack(cfn, name, outputs, resources=None):
    template = {
        "Resources": resources or {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(template))


def image(status, reason=None, ami_id=None):
    state = {"status": status}
    if reason:
        state["reason"] = reason
    body = {"arn": IMAGE_ARN, "state": state}
    if ami_id:
        body["outputResources"] = {"amis": [{"region": "eu-west-1", "image": ami_id}]}
    return {"requestId": "r", "image": body}


class Session:
    """boto3 clients: moto's for CloudFormation and S3, the stubbed one for Image Builder."""

    def __init__(self, imagebuilder):
        self.imagebuilder = imagebuilder

    def client(self, name):
        if name == "imagebuilder":
            return self.imagebuilder
        return boto3.client(name, region_name="eu-west-1")


@mock_aws
class MakeAmi(unittest.TestCase):
    def setUp(self):
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="eu-west-1")
        self.s3 = boto3.client("s3", region_name="eu-west-1")
        self.s3.create_bucket(Bucket="artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        self.cfn = boto3.client("cloudformation", region_name="eu-west-1")
        self.lines = []
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.worker = Path(self.dir, "barge-worker")
        self.worker.write_bytes(b"\x7fELF worker")
        self.imagebuilder = boto3.client("imagebuilder", region_name="eu-west-1")
        self.stub = Stubber(self.imagebuilder)

    def deploy(self, stateful=None, pipeline=None):
        stack(self.cfn, "barge-dev-stateful", stateful if stateful is not None else {"ArtifactLocation": "s3://artifacts/worker/"})
        stack(
            self.cfn,
            "barge-dev-pipeline",
            pipeline if pipeline is not None else {"PipelineArn": PIPELINE_ARN, "WorkerArchitecture": "arm64"},
        )

    def run_ami(self, **overrides):
        args = argparse.Namespace(stage="dev", binary=str(self.worker), poll=30, timeout=180)
        vars(args).update(overrides)
        with self.stub:
            return ami.run(args, Session(self.imagebuilder), self.lines.append, sleep=lambda _: None)

    def test_uploads_the_worker_and_units_starts_the_pipeline_and_prints_the_ami(self):
        # GIVEN a deployed stage and a pipeline that builds, tests, then distributes the image
        self.deploy()
        self.stub.add_response(
            "start_image_pipeline_execution",
            {"requestId": "r", "clientToken": "t", "imageBuildVersionArn": IMAGE_ARN},
            {"imagePipelineArn": PIPELINE_ARN, "clientToken": ANY},
        )
        for status in ["PENDING", "BUILDING", "BUILDING", "TESTING", "DISTRIBUTING"]:
            self.stub.add_response("get_image", image(status), {"imageBuildVersionArn": IMAGE_ARN})
        self.stub.add_response("get_image", image("AVAILABLE", ami_id="ami-0123456789abcdef0"), {"imageBuildVersionArn": IMAGE_ARN})
        # WHEN make ami runs
        found = self.run_ami()
        # THEN the AMI id comes back, every file the component downloads is in the bucket,
        # and each status change was reported once
        self.assertEqual(found, "ami-0123456789abcdef0")
        keys = sorted(o["Key"] for o in self.s3.list_objects_v2(Bucket="artifacts")["Contents"])
        self.assertEqual(keys, sorted(["worker/barge-worker"] + [f"worker/{n}" for n in ami.UNIT_FILES]))
        body = self.s3.get_object(Bucket="artifacts", Key="worker/barge-worker.service")["Body"].read()
        self.assertEqual(body, (REPO / "ami" / "barge-worker.service").read_bytes())
        statuses = [line.rsplit(": ", 1)[-1] for line in self.lines if line.startswith("image ")]
        self.assertEqual(statuses, ["PENDING", "BUILDING", "TESTING", "DISTRIBUTING", "AVAILABLE"])
        self.stub.assert_no_pending_responses()

    def test_a_failed_build_says_why_and_where_the_logs_are(self):
        self.deploy()
        self.stub.add_response("start_image_pipeline_execution", {"imageBuildVersionArn": IMAGE_ARN}, None)
        self.stub.add_response("get_image", image("FAILED", reason="Step PgDumpIs18 failed"), None)
        with self.assertRaises(ami.AmiError) as e:
            self.run_ami()
        self.assertIn("FAILED: Step PgDumpIs18 failed", str(e.exception))
        self.assertIn("image-builder-logs/", str(e.exception))

    def test_a_transient_get_image_error_is_retried(self):
        self.deploy()
        self.stub.add_response("start_image_pipeline_execution", {"imageBuildVersionArn": IMAGE_ARN}, None)
        self.stub.add_client_error("get_image", service_error_code="ServiceUnavailableException", http_status_code=503)
        self.stub.add_response("get_image", image("AVAILABLE", ami_id="ami-0fedcba9876543210"), None)
        self.assertEqual(self.run_ami(), "ami-0fedcba9876543210")

    def test_gives_up_after_the_timeout(self):
        ticks = iter(range(0, 10_000, 60))
        imagebuilder = self.imagebuilder
        for _ in range(4):
            self.stub.add_response("get_image", image("BUILDING"), None)
        with self.stub, self.assertRaises(ami.AmiError) as e:
            ami.wait(imagebuilder, IMAGE_ARN, self.lines.append, poll=60, timeout=180, sleep=lambda _: None, clock=lambda: next(ticks))
        self.assertIn("still BUILDING after 3 minutes", str(e.exception))

    def test_no_stage_deployed(self):
        with self.assertRaises(ami.AmiError) as e:
            self.run_ami()
        self.assertIn("there is no stack barge-dev-stateful: deploy the stage first", str(e.exception))

    def test_a_stack_without_the_outputs(self):
        self.deploy(pipeline={"WorkerArchitecture": "arm64"})
        with self.assertRaises(ami.AmiError) as e:
            self.run_ami()
        self.assertIn("barge-dev-pipeline has no PipelineArn output", str(e.exception))

    def test_a_missing_binary(self):
        self.deploy()
        with self.assertRaises(ami.AmiError) as e:
            self.run_ami(binary=str(Path(self.dir, "nope")))
        self.assertIn("no worker binary at", str(e.exception))


class WorkerImageCheck(unittest.TestCase):
    """scripts/worker-image check: the architecture and glibc of a binary against the image's."""

    def check(self, binary, arch):
        return subprocess.run([str(REPO / "scripts" / "worker-image"), "check", str(binary), arch], capture_output=True, text=True)

    def test_a_host_binary_passes_for_its_architecture_only(self):
        host = shutil.which("ls")
        machine = os.uname().machine
        own, other = ("x86_64", "arm64") if machine == "x86_64" else ("arm64", "x86_64")
        passed = self.check(host, own)
        self.assertEqual(passed.returncode, 0, passed.stderr)
        self.assertRegex(passed.stderr, r"needs GLIBC_2\.\d+ at most \(the image has 2\.39\)")
        refused = self.check(host, other)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn(f"the image is {other}", refused.stderr)

    def test_a_binary_needing_a_newer_glibc_is_refused(self):
        # GIVEN a copy of a host binary whose GLIBC_2.x version needs are rewritten to 2.99
        host = Path(shutil.which("ls")).read_bytes()
        newest = max(re.findall(rb"GLIBC_2\.(\d\d)\b", host), key=int)
        patched = host.replace(b"GLIBC_2." + newest, b"GLIBC_2.99")
        binary = Path(tempfile.mkdtemp(), "worker")
        self.addCleanup(shutil.rmtree, binary.parent)
        binary.write_bytes(patched)
        machine = "x86_64" if os.uname().machine == "x86_64" else "arm64"
        # WHEN it is checked THEN it is refused, naming the version
        refused = self.check(binary, machine)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("needs GLIBC_2.99, the image has 2.39", refused.stderr)

    def test_no_binary(self):
        refused = self.check("/nonexistent/barge-worker", "arm64")
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("no binary at", refused.stderr)


if __name__ == "__main__":
    unittest.main()
