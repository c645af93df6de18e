#!/usr/bin/env python3
"""`make ami`: bake the worker AMI of a deployed stage.

Reads the stage's stack outputs (artifact location, pipeline, architecture), builds
barge-worker for the image's architecture and glibc (scripts/worker-image, which refuses a
binary the image cannot run), uploads it with its systemd units and environment file,
starts the Image Builder pipeline, waits for the image to become AVAILABLE by polling
GetImage, and prints the AMI id. The pipeline's distribution writes that id to the SSM
parameter the worker launch template resolves, so the next job runs on it.

Credentials and region are the AWS CLI's (AWS_PROFILE, AWS_REGION, ...).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import boto3
from botocore.exceptions import BotoCoreError, ClientError

REPO = Path(__file__).resolve().parent.parent
# What the worker component downloads (ami/components/20-barge-worker.yml), and from where here.
UNIT_FILES = ["barge-worker.service", "barge-worker-limits.service", "worker.env"]
DONE = {"AVAILABLE"}
FAILED = {"FAILED", "CANCELLED", "DELETED"}


class AmiError(Exception):
    """A failure with a message a user can act on."""


def stack_outputs(cloudformation, stack: str) -> dict[str, str]:
    try:
        answer = cloudformation.describe_stacks(StackName=stack)
    except ClientError as e:
        if "does not exist" in str(e):
            raise AmiError(f"there is no stack {stack}: deploy the stage first (make deploy STAGE=...)") from None
        raise AmiError(f"cannot describe stack {stack}: {e.response['Error'].get('Message', e)}") from None
    outputs = answer["Stacks"][0].get("Outputs", [])
    return {o["OutputKey"]: o["OutputValue"] for o in outputs}


def require(outputs: dict[str, str], stack: str, key: str) -> str:
    if key not in outputs:
        raise AmiError(f"stack {stack} has no {key} output: redeploy it with this version of barge (make deploy)")
    return outputs[key]


def build_worker(architecture: str) -> Path:
    """Builds barge-worker for the image (release) and returns its path."""
    result = subprocess.run(
        [str(REPO / "scripts" / "worker-image"), "build", architecture, "release"],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AmiError("building barge-worker for the image failed (see above)")
    return Path(result.stdout.strip().splitlines()[-1])


def upload(s3, location: str, worker: Path, log: Callable[[str], None]) -> None:
    parsed = urlparse(location)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise AmiError(f"the artifact location {location!r} is not an s3:// URL")
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    files = [(worker, "barge-worker")] + [(REPO / "ami" / name, name) for name in UNIT_FILES]
    for path, name in files:
        s3.upload_file(str(path), bucket, prefix + name)
    log(f"uploaded barge-worker and {', '.join(UNIT_FILES)} to {location}")


def start(imagebuilder, pipeline_arn: str) -> str:
    answer = imagebuilder.start_image_pipeline_execution(imagePipelineArn=pipeline_arn, clientToken=str(uuid.uuid4()))
    return answer["imageBuildVersionArn"]


def wait(
    imagebuilder,
    image_arn: str,
    log: Callable[[str], None],
    poll: float = 30,
    timeout: float = 3 * 3600,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Polls GetImage until the image is AVAILABLE (returns its AMI id) or failed."""
    deadline = clock() + timeout
    last = None
    while True:
        try:
            image = imagebuilder.get_image(imageBuildVersionArn=image_arn)["image"]
        except (ClientError, BotoCoreError) as e:
            # A transient failure to ask is not a failed build: ask again next time.
            log(f"GetImage failed ({e}); retrying")
            image = None
        if image is not None:
            state = image.get("state", {})
            status = state.get("status", "UNKNOWN")
            if status != last:
                log(f"image {image_arn.rsplit('/', 2)[-2]}/{image_arn.rsplit('/', 1)[-1]}: {status}")
                last = status
            if status in DONE:
                amis = image.get("outputResources", {}).get("amis", [])
                if not amis:
                    raise AmiError(f"image {image_arn} is AVAILABLE but lists no AMI")
                return amis[0]["image"]
            if status in FAILED:
                reason = state.get("reason", "no reason given")
                raise AmiError(
                    f"image build {status}: {reason}\n"
                    "  the build and test logs are in the artifact bucket under image-builder-logs/"
                )
        if clock() >= deadline:
            raise AmiError(f"image {image_arn} is still {last} after {timeout / 60:.0f} minutes; see the Image Builder console")
        sleep(poll)


def run(args: argparse.Namespace, session: boto3.session.Session, log: Callable[[str], None], sleep=time.sleep) -> str:
    cloudformation = session.client("cloudformation")
    stateful = f"barge-{args.stage}-stateful"
    pipeline = f"barge-{args.stage}-pipeline"
    location = require(stack_outputs(cloudformation, stateful), stateful, "ArtifactLocation")
    outputs = stack_outputs(cloudformation, pipeline)
    pipeline_arn = require(outputs, pipeline, "PipelineArn")
    architecture = require(outputs, pipeline, "WorkerArchitecture")
    worker = Path(args.binary) if args.binary else build_worker(architecture)
    if not worker.is_file():
        raise AmiError(f"no worker binary at {worker}")
    upload(session.client("s3"), location, worker, log)
    image_arn = start(session.client("imagebuilder"), pipeline_arn)
    log(f"started {pipeline_arn.rsplit('/', 1)[-1]}: {image_arn}")
    return wait(session.client("imagebuilder"), image_arn, log, poll=args.poll, timeout=args.timeout * 60, sleep=sleep)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make ami", description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", default=os.environ.get("STAGE") or os.environ.get("BARGE_STAGE") or "dev", help="the deployed stage (default: dev)")
    p.add_argument("--binary", help="upload this barge-worker instead of building it (it must suit the image)")
    p.add_argument("--poll", type=float, default=30, help="seconds between GetImage calls (default: 30)")
    p.add_argument("--timeout", type=float, default=180, help="minutes to wait for the image (default: 180)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log = lambda line: print(f"make ami: {line}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        ami = run(args, boto3.session.Session(), log)
    except AmiError as e:
        log(str(e))
        return 1
    except (BotoCoreError, ClientError) as e:
        log(f"AWS refused: {e}\n  check your credentials and region (AWS_PROFILE, AWS_REGION)")
        return 1
    print(ami)
    return 0


if __name__ == "__main__":
    sys.exit(main())
