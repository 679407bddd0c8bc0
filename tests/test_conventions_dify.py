"""Dify's own OpenTelemetry spans (``ENABLE_OTEL=true``), as its source writes them.

Read in langgenius/dify, ``api/extensions/otel/``: ``AppGenerateHandler`` (the span around
``AppGenerateService.generate``: ``dify.app_id``, ``dify.tenant_id``, ``gen_ai.user.id``,
``dify.user_type``, ``dify.streaming`` and ``dify.workflow_id``, which is ``unknown``
unless the request names a workflow version), ``WorkflowAppRunnerHandler`` (the span
around a workflow or chatflow run: the same ids, ``dify.workflow_id`` the published
version's id) and the node parsers (``gen_ai.span.kind=LLM`` on an LLM node, its usage in
``gen_ai.usage.input_tokens`` / ``output_tokens``). Each publish of a Dify app makes a new
workflow row (``WorkflowService.publish_workflow``), so ``dify.workflow_id`` changes with
every version: the workflow is the app (``dify.app_id``), the id the console shows.
"""

from __future__ import annotations

import pytest

from otel_processor.conventions import OTHER, WORKFLOW, normalize

TENANT = "6f1c0a52-7b3e-4c1d-9a8e-0d2b5e4f3a10"      # a Dify workspace id
ALICE = "0a8d2f3e-1c4b-4e5f-8a9b-7c6d5e4f3a21"       # a Dify account id
WORKFLOW_APP = "a1b2c3d4-0000-4000-8000-000000000001"  # a workflow app
CHATFLOW_APP = "a1b2c3d4-0000-4000-8000-000000000002"  # an advanced-chat (chatflow) app
VERSION_1 = "f0000000-0000-4000-8000-000000000001"    # workflow rows: one per publish
VERSION_2 = "f0000000-0000-4000-8000-000000000002"

DIRECTORY = f"""
tenants:
  - id: {TENANT}
    name: Acme workspace
    members:
      - {{id: {ALICE}, name: Alice}}
agents:
  - {{id: {CHATFLOW_APP}, name: Support assistant, owner_tenant: {TENANT}}}
workflows:
  - {{id: {WORKFLOW_APP}, name: Summarize, owner_tenant: {TENANT}}}
  - {{id: {CHATFLOW_APP}, name: Support chatflow, owner_tenant: {TENANT}, kind: chatflow,
     agent: {CHATFLOW_APP}}}
"""


@pytest.fixture
def make(quick_runtime, tmp_path):
    """``quick_runtime`` on the Dify directory."""
    path = tmp_path / "directory.yaml"
    path.write_text(DIRECTORY)
    return lambda: quick_runtime(directory=path)


def _ids(app: str, workflow_id: str) -> dict:
    return {"dify.app_id": app, "dify.tenant_id": TENANT, "gen_ai.user.id": ALICE,
            "dify.streaming": True, "dify.workflow_id": workflow_id}


def run(p, app: str, version: str, usage: list[tuple[int, int]]) -> None:
    """One Dify app run: the generate span, the runner span, one span per LLM node."""
    tracer = p.tracer
    with tracer.start_as_current_span("AppGenerateService.generate",
                                      attributes={**_ids(app, "unknown"),
                                                  "dify.user_type": "Account"}):
        with tracer.start_as_current_span("WorkflowAppRunner.run",
                                          attributes=_ids(app, version)):
            for n, (tin, tout) in enumerate(usage):
                with tracer.start_as_current_span(f"LLM {n}", attributes={
                        "node.id": f"llm-{n}", "node.type": "llm", "gen_ai.framework": "dify",
                        "gen_ai.span.kind": "LLM", "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.provider.name": "langgenius/openai/openai",
                        "gen_ai.usage.input_tokens": tin, "gen_ai.usage.output_tokens": tout,
                        "gen_ai.usage.total_tokens": tin + tout}):
                    pass


def test_the_app_id_is_the_workflow_id():
    runner = normalize(_ids(WORKFLOW_APP, VERSION_1))
    assert (runner.kind, runner.workflow_id, runner.tenant, runner.caller) == (
        WORKFLOW, WORKFLOW_APP, TENANT, ALICE)
    # the generate span names no workflow version: it is no workflow span
    assert normalize(_ids(WORKFLOW_APP, "unknown")).kind == OTHER
    # without an app id (a span of another shape), the workflow row id still names it
    assert normalize({"dify.workflow_id": VERSION_1}).workflow_id == VERSION_1


def test_runs_of_two_published_versions_count_on_one_workflow(make):
    p = make()
    run(p, WORKFLOW_APP, VERSION_1, [(120, 30), (40, 8)])
    run(p, WORKFLOW_APP, VERSION_2, [(75, 15)])   # after a publish: a new workflow row id
    p.wait_closed(2)
    t = {typ: p.value("llm_workflow_tokens_total", tenant=TENANT, workflow=WORKFLOW_APP,
                      type=typ) for typ in ("input", "output")}
    assert t == {"input": 120 + 40 + 75, "output": 30 + 8 + 15}
    assert p.value("llm_workflow_runs_total", owner_tenant=TENANT, workflow=WORKFLOW_APP) == 2
    assert p.value("llm_member_tokens_total", tenant=TENANT, member=ALICE,
                   type="input") == 235
    for version in (VERSION_1, VERSION_2, "unknown"):
        assert p.value("llm_workflow_tokens_total", tenant=TENANT, workflow=version,
                       type="input") == 0


def test_a_chatflow_app_bound_in_the_directory_counts_for_its_agent(make):
    p = make()
    run(p, CHATFLOW_APP, VERSION_1, [(200, 50)])
    p.wait_closed(1)
    assert p.value("llm_agent_tokens_total", tenant=TENANT, agent=CHATFLOW_APP,
                   type="input") == 200
    assert p.value("llm_agent_tokens_total", tenant=TENANT, agent=CHATFLOW_APP,
                   type="output") == 50
    # a chat workflow's tokens go to its agent, not to a workflow (R5)
    assert p.value("llm_workflow_tokens_total", tenant=TENANT, workflow=CHATFLOW_APP,
                   type="input") == 0
