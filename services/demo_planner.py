"""``pwasync demo --source planner``: the settings and the Planner user's part of the demo.

The sandbox's seed holds basic Planner plans in two groups; the demo syncs every plan of both
(``PWASYNC_PLANNER_GROUPS``) and, as a Planner user would, puts the ``Create event`` label on
one more task before the sync.
"""

from __future__ import annotations

from services.launcher import SandboxProcess

LABEL = "Create event"


def planner_settings(sandbox: SandboxProcess) -> dict[str, str]:
    with _planner(sandbox) as planner:
        groups = planner.group_ids()
    return {"PWASYNC_SOURCE": "planner", "PWASYNC_PLANNER_GROUPS": ",".join(groups)}


def label_demo_tasks(sandbox: SandboxProcess) -> list[str]:
    """Put the label on one more task, as a user would; the ids of every labelled task."""
    with _planner(sandbox) as planner:
        plan = planner.plan("Product launch")
        planner.update_task(plan["tasks"]["Budget review"], labels=[LABEL, "Urgent"])
        return planner.labelled_task_ids(LABEL)


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
