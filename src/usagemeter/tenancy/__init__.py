"""Tenants, their members and (where usagemeter's shim owns auth.users) users, without writing SQL.

    tenants.create_tenant(conn, Identity.service(), name="Acme", slug="acme", owner_user_id=ada)
    tenants.add_member(conn, Identity.user(ada), tenant_id=acme.id, user_id=grace, role="admin")
    users.create_user(admin_conn, email="grace@example.com")

Every tenant and member function runs as the caller's identity, so the database's grants and RLS
policies decide who may do what; this package only turns their refusals into project errors.
"""

from __future__ import annotations
