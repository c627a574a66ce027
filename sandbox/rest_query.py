"""``$select`` and ``$expand`` of the ProjectServer REST API, and writing its entities.

``$expand`` is a comma list of navigation paths (``Assignments/Task,Assignments/Resource``);
``$select`` names properties, navigations and paths into expanded navigations (``Task/Id``,
``Assignments/Resource/Email``). A path through a navigation that is not expanded is refused
with SharePoint's message, as is a name the type does not have. With a ``$select``, an
expanded navigation appears only if it is selected (by name: all its properties; by paths:
those). Expanded collections are inline and never paged.

Values are written as this API writes them: dates ISO 8601 without offset in verbose too
(never ``/Date(…)/``), "no date" as ``0001-01-01T00:00:00``; FLAG custom values in the form the
``pwa_flag_value_form`` and ``pwa_flag_unset`` settings choose (unconfirmed); numbers of custom
fields as strings (as seen in public samples); and ``task_row_overrides`` as raw values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.odata_format import Format, ODataError
from sandbox.published import TYPES, EntityType, Node, properties_of, task_custom_fields
from sandbox.pwa import PwaCall
from sandbox.sharepoint_rest import INVALID_QUERY, api_root, light
from sandbox.state import FLAG_FIELD_TYPE, Tenant

Tree = dict[str, "Tree"]
_NUMBER_FIELD_TYPES = frozenset({6, 9, 15})  # duration, cost, number
_FLAG_FORMS = {
    "bool": (True, False),
    "text": ("True", "False"),
    "number": (1, 0),
    "yesno": ("Yes", "No"),
}
_LEFT_OUT = object()  # a property not written at all


@dataclass
class Selection:
    properties: list[str] | None  # None: every property
    expanded: dict[str, Selection] = field(default_factory=dict)
    deferred: list[str] | None = None  # unexpanded navigations to link; None: all of them


def _invalid(message: str) -> ODataError:
    return ODataError(400, message, INVALID_QUERY)


def _unknown(name: str) -> ODataError:
    return _invalid(f"The field or property '{name}' does not exist.")


def _paths(text: str | None) -> list[tuple[str, ...]]:
    return [tuple(p.strip().split("/")) for p in (text or "").split(",") if p.strip()]


def parse_selection(
    tenant: Tenant, entity_type: EntityType, select: str | None, expand: str | None
) -> Selection:
    tree = _expand_tree(entity_type, _paths(expand))
    paths = _paths(select) if select is not None and select.strip() else None
    for path in paths or []:
        _check_select_path(tenant, entity_type, tree, path)
    return _build(entity_type, tree, paths)


def _expand_tree(entity_type: EntityType, paths: list[tuple[str, ...]]) -> Tree:
    tree: Tree = {}
    for path in paths:
        level, current = tree, entity_type
        for name in path:
            if name not in current.navigation:
                raise _unknown(name)
            target, _ = current.navigation[name]
            if target is None:
                raise _invalid(f"Expanding '{name}' is not emulated by the sandbox.")
            level = level.setdefault(name, {})
            current = TYPES[target]
    return tree


def _check_select_path(
    tenant: Tenant, entity_type: EntityType, tree: Tree, path: tuple[str, ...]
) -> None:
    current, level = entity_type, tree
    for position, name in enumerate(path):
        last = position == len(path) - 1
        if last and (name == "*" or name in properties_of(tenant, current)):
            return
        if name not in current.navigation:
            raise _unknown(name)
        if last:
            return
        if name not in level:
            raise _invalid(
                f"The query to field '{'/'.join(path)}' is not valid. The $select query string "
                f"must specify the target fields and the $expand query string must contains "
                f"{name}."
            )
        current, level = TYPES[current.navigation[name][0] or ""], level[name]


def _build(entity_type: EntityType, tree: Tree, paths: list[tuple[str, ...]] | None) -> Selection:
    def target(name: str) -> EntityType:
        return TYPES[entity_type.navigation[name][0] or ""]

    if paths is None:
        return Selection(None, {n: _build(target(n), sub, None) for n, sub in tree.items()})
    star = any(path == ("*",) for path in paths)
    named = {p[0] for p in paths if len(p) == 1 and p[0] in entity_type.navigation}
    nested: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        if len(path) > 1:
            nested.setdefault(path[0], []).append(path[1:])
    properties = [p[0] for p in paths if len(p) == 1 and p[0] != "*" and p[0] not in named]
    expanded = {
        name: _build(target(name), sub, None if star or name in named else nested[name])
        for name, sub in tree.items()
        if star or name in named or name in nested
    }
    deferred = [name for name in entity_type.navigation if name in named and name not in tree]
    return Selection(None if star else list(dict.fromkeys(properties)), expanded, deferred)


# ---------------------------------------------------------------------------------------------
# Writing entities


def rest_date(value: datetime) -> str:
    """``2026-12-01T09:00:00``, with ``.fff`` only when there are milliseconds."""
    return value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")


class Writer:
    """Writes nodes in the negotiated format with the run's value forms."""

    def __init__(self, call: PwaCall) -> None:
        self._call = call
        self._config: SandboxConfig = call.sandbox.config
        self._custom = {n: f.field_type for n, f in task_custom_fields(call.sandbox.tenant).items()}
        self._properties = {k: properties_of(call.sandbox.tenant, t) for k, t in TYPES.items()}

    def entity(self, node: Node, selection: Selection) -> dict[str, Any]:
        properties = self._properties[node.type.name.removeprefix("PS.")]
        values: dict[str, Any] = {}
        for name in properties if selection.properties is None else selection.properties:
            if name in node.overrides:
                values[name] = node.overrides[name]  # bad data, exactly as configured
                continue
            value = self._value(name, properties[name], node.values.get(name))
            if value is not _LEFT_OUT:
                values[name] = value
        expanded = {
            name: self._expanded(node.navigation[name](), sub)
            for name, sub in selection.expanded.items()
        }
        deferred = [
            name
            for name in node.type.navigation
            if name not in expanded and (selection.deferred is None or name in selection.deferred)
        ]
        return self._shape(node, values, expanded, deferred)

    def _expanded(self, target: Any, selection: Selection) -> Any:
        if isinstance(target, list):
            entities = [self.entity(node, selection) for node in target]
            return {"results": entities} if self._call.fmt is Format.VERBOSE else entities
        return None if target is None else self.entity(target, selection)

    def _shape(
        self, node: Node, values: dict[str, Any], expanded: dict[str, Any], deferred: list[str]
    ) -> dict[str, Any]:
        if self._call.fmt is not Format.VERBOSE:  # light writes no links for deferred ones
            return light(self._call, node.type.name, node.link, {**values, **expanded})
        uri = f"{api_root(self._call)}/{node.link}"
        entity: dict[str, Any] = {"__metadata": {"id": uri, "uri": uri, "type": node.type.name}}
        for name in node.type.navigation:
            if name in expanded:
                entity[name] = expanded[name]
            elif name in deferred:
                entity[name] = {"__deferred": {"uri": f"{uri}/{name}"}}
        return {**entity, **values}

    def _value(self, name: str, edm_type: str, value: Any) -> Any:
        field_type = self._custom.get(name)
        if field_type == FLAG_FIELD_TYPE:
            return self._flag(value)
        if value is None:
            return None
        if field_type in _NUMBER_FIELD_TYPES:
            return str(value)
        if edm_type == "Edm.DateTime" and isinstance(value, datetime):
            return rest_date(value)
        return value

    def _flag(self, value: Any) -> Any:
        if value is None:
            return _LEFT_OUT if self._config.pwa_flag_unset == "missing" else None
        yes, no = _FLAG_FORMS[self._config.pwa_flag_value_form]
        return yes if value else no
