#!/usr/bin/env python3
"""Times jobs through `barge serve` for bench/run.

  remote.py init ENDPOINT TOKEN_FILE SOURCE TARGET
      one init job, submit to succeeded; prints "seconds peak_worker_rss_kb attempt"
  remote.py latency ENDPOINT TOKEN_FILE SOURCE TARGET N
      N validate jobs one after another, each must succeed; prints the median and max seconds
      from submit until the client saw `running` (the worker process started and claimed the
      job), then the median of the server's own created_at → started_at

URLs come from the environment variables named SOURCE and TARGET, never from argv.
"""
import datetime, json, os, statistics, sys, time, urllib.request


def call(endpoint, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(endpoint + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def seconds_between(start, end):
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def peak_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    mode, endpoint, token_file, source, target = sys.argv[1:6]
    token = open(token_file).read().strip()
    spec = {"command": "init" if mode == "init" else "validate",
            "source_url": os.environ[source], "target_url": os.environ[target]}
    if mode == "init":
        t0 = time.monotonic()
        job = call(endpoint, token, "POST", "/jobs", spec)
        peak, state = 0, job["status"]["state"]
        while state not in ("succeeded", "failed", "cancelled", "timed_out"):
            time.sleep(0.1)
            job = call(endpoint, token, "GET", "/jobs/" + job["id"])
            state = job["status"]["state"]
            instance = job.get("instance_id") or ""
            if instance.startswith("proc-"):
                peak = max(peak, peak_rss_kb(instance[5:]))
        seconds = time.monotonic() - t0
        if state != "succeeded":
            sys.exit(f"remote init ended {json.dumps(job['status'])}")
        print(f"{seconds:.1f} {peak} {job['attempt']}")
    else:
        waits, server = [], []
        for _ in range(int(sys.argv[6])):
            t0 = time.monotonic()
            job = call(endpoint, token, "POST", "/jobs", spec)
            while job["status"]["state"] in ("queued", "launching"):
                time.sleep(0.01)
                job = call(endpoint, token, "GET", "/jobs/" + job["id"])
            waits.append(time.monotonic() - t0)
            while job["status"]["state"] not in ("succeeded", "failed", "cancelled", "timed_out"):
                time.sleep(0.05)
                job = call(endpoint, token, "GET", "/jobs/" + job["id"])
            if job["status"]["state"] != "succeeded" or not job.get("started_at"):
                sys.exit(f"validate job {job['id']} ended {json.dumps(job['status'])}")
            server.append(seconds_between(job["created_at"], job["started_at"]))
        print(f"{statistics.median(waits):.3f} {max(waits):.3f} {statistics.median(server):.3f}")


main()
