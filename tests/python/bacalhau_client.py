"""Drives a gadus node with Bacalhau's official Python API client (bacalhau-apiclient).

Usage: python bacalhau_client.py http://127.0.0.1:PORT [TOKEN [stop-forbidden]]
With a TOKEN, every request carries `Authorization: Bearer TOKEN` (a node with an access
policy). `stop-forbidden`: the node's policy forbids DELETE on /jobs/{id}, as Bacalhau's
policy_ns_anon.rego does (it opens only the bare jobs endpoint to writes), so the stop must
be refused with 403 and change nothing.
Every call must succeed and return what a Bacalhau node would; any failure exits non-zero
with the reason. Run by tests/tests/python_client.rs (which starts `gadus serve`).
"""

import sys
import time

import bacalhau_apiclient as bc
from bacalhau_apiclient.api import ops_api, orchestrator_api
from bacalhau_apiclient.models.api_put_job_request import ApiPutJobRequest
from bacalhau_apiclient.models.job import Job
from bacalhau_apiclient.models.spec_config import SpecConfig
from bacalhau_apiclient.models.task import Task
from bacalhau_apiclient.models.timeout_config import TimeoutConfig


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def main():
    host = sys.argv[1]
    conf = bc.Configuration()
    conf.host = host
    client = bc.ApiClient(conf)
    if len(sys.argv) > 2:
        client.set_default_header("Authorization", f"Bearer {sys.argv[2]}")
    orch = orchestrator_api.OrchestratorApi(client)
    ops = ops_api.OpsApi(client)

    version = ops.agentversion()
    check(version.git_version.startswith("v"), f"agent version {version.git_version}")
    alive = ops.agentalive()
    check(alive is not None, "agent alive")

    # A job that completes: the noop engine.
    job = Job(
        name="python-client",
        type="batch",
        count=1,
        tasks=[Task(name="main", engine=SpecConfig(type="noop", params={}))],
    )
    put = orch.orchestratorput_job(ApiPutJobRequest(job=job))
    check(put.job_id.startswith("j-"), f"put job -> {put.job_id}")
    job_id = put.job_id

    state = None
    for _ in range(200):
        got = orch.orchestratorget_job(job_id)
        state = got.job.state.state_type
        if state in ("Completed", "Failed", "Stopped"):
            break
        time.sleep(0.05)
    check(state == "Completed", f"job reached Completed (got {state})")

    got = orch.orchestratorget_job(job_id, include="executions,history")
    check(got.job.id == job_id, "get job returns the job")
    check(got.executions is not None and len(got.executions.items) == 1, "get job includes executions")
    check(got.history is not None and len(got.history.items) > 0, "get job includes history")

    listed = orch.orchestratorlist_jobs(limit=10)
    check(any(j.id == job_id for j in listed.items), "list jobs contains the job")

    execs = orch.orchestratorjob_executions(job_id, "created_at")
    check(len(execs.items) == 1 and execs.items[0].job_id == job_id, "job executions")

    hist = orch.orchestratorjob_history(job_id)
    check(len(hist.items) > 0, "job history")

    # A job that cannot be placed yet waits in the queue (it has a QueueTimeout); stop it.
    stuck = Job(
        name="python-client-stuck",
        type="batch",
        count=1,
        constraints=[bc.models.LabelSelectorRequirement(key="nowhere", operator="=", values=["x"])],
        tasks=[
            Task(
                name="main",
                engine=SpecConfig(type="noop", params={}),
                timeouts=TimeoutConfig(queue_timeout=600),
            )
        ],
    )
    put2 = orch.orchestratorput_job(ApiPutJobRequest(job=stuck))
    if len(sys.argv) > 3 and sys.argv[3] == "stop-forbidden":
        try:
            orch.orchestratorstop_job(put2.job_id, reason="python client test")
            check(False, "the policy lets the stop through")
        except bc.rest.ApiException as e:
            check(e.status == 403, f"stop refused by the policy ({e.status})")
        got2 = orch.orchestratorget_job(put2.job_id)
        check(got2.job.state.state_type != "Stopped", f"refused stop changed nothing ({got2.job.state.state_type})")
    else:
        stopped = orch.orchestratorstop_job(put2.job_id, reason="python client test")
        check(stopped.evaluation_id is not None, "stop job")
        got2 = orch.orchestratorget_job(put2.job_id)
        check(got2.job.state.state_type == "Stopped", f"stopped job is Stopped ({got2.job.state.state_type})")

    nodes = orch.orchestratorlist_nodes()
    check(len(nodes.nodes) >= 1, f"list nodes ({len(nodes.nodes)})")
    info = nodes.nodes[0].info
    check(info.node_id, f"node id {info.node_id}")

    print("all python client checks passed")


if __name__ == "__main__":
    main()
