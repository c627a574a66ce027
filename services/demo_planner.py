"""``pwasync demo --source planner``: the settings and the Planner user's part of the demo.

The sandbox's seed holds basic Planner plans in two groups; the demo syncs every plan of both
(``PWASYNC_PLANNER_GROUPS``) and, as a Planner user would, puts the ``Create event`` label on
one more task before the sync.
"""

from __future__ import annotations

from services.launcher import SandboxProcess

DESCRIPTION = "basic Planner plans through Graph, tasks labelled 'Create event', all-day events"
LABEL = "Create event"


def planner_settings(sandbox: SandboxProcess) -> dict[str, str]:
    with _planner(sandbox) as planner:
        groups = planner.group_ids()
    return {"PWASYNC_SOURCE": "planner", "PWASYNC_PLANNER_GROUPS": ",".join(groups)}


def label_demo_tasks(sandbox: SandboxProcess) -> str:
    """Label one more task as a user would; say what the plans hold."""
    with _planner(sandbox) as planner:
        plan = planner.plan("Product launch")
        planner.update_task(plan["tasks"]["Budget review"], labels=[LABEL, "Urgent"])
        plans = planner.overview()["plans"]
    tasks = sum(p["task_count"] for p in plans)
    return f"'Budget review' labelled {LABEL!r}; {len(plans)} plan(s), {tasks} task(s) in Planner"


class _planner:
    def __init__(self, sandbox: SandboxProcess) -> None:
        from sandbox.client import SandboxClient
        from sandbox.planner_client import PlannerControl

        self._client = SandboxClient(sandbox.url, ca_file=sandbox.settings["PWASYNC_CA_BUNDLE"])
        self._control = PlannerControl(self._client)

    def __enter__(self):  # noqa: ANN204
        return self._control

    def __exit__(self, *exc_info: object) -> None:
        self._client.close()
