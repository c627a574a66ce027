"""``$metadata`` of the ProjectData feed: an EDMX document with every entity's properties.

Enterprise custom fields appear as properties of their entity type, so a field created through
``CustomFields/Add`` shows up here as soon as it exists.  Navigation properties are left out
(they would need association sets that nothing in pwasync reads).
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from sandbox.reporting import ENTITY_SETS, NAMESPACE
from sandbox.state import Tenant


def metadata_document(tenant: Tenant) -> str:
    types, sets = [], []
    for entity_set in ENTITY_SETS.values():
        keys = "".join(f"<PropertyRef Name={quoteattr(k)}/>" for k in entity_set.keys)
        properties = "".join(
            f"<Property Name={quoteattr(name)} Type={quoteattr(edm_type)} "
            f"Nullable={quoteattr(str(name not in entity_set.keys).lower())}/>"
            for name, edm_type in entity_set.all_properties(tenant).items()
        )
        types.append(
            f"<EntityType Name={quoteattr(entity_set.type_name)}><Key>{keys}</Key>"
            f"{properties}</EntityType>"
        )
        sets.append(
            f"<EntitySet Name={quoteattr(entity_set.name)} "
            f'EntityType="{NAMESPACE}.{entity_set.type_name}"/>'
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx">'
        '<edmx:DataServices m:DataServiceVersion="3.0" m:MaxDataServiceVersion="3.0" '
        'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">'
        f'<Schema Namespace="{NAMESPACE}" xmlns="http://schemas.microsoft.com/ado/2009/11/edm">'
        f"{''.join(types)}"
        f'<EntityContainer Name="{NAMESPACE}" m:IsDefaultEntityContainer="true">'
        f"{''.join(sets)}</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>"
    )
