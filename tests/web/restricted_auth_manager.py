"""Airflow's simple auth manager with one per-DAG rule, which the simple manager alone cannot express.

Configured through `[core] auth_manager` in the web tests: the user `outsider` (role viewer) may read
every DAG except those of the model `fraud`.
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


class RestrictedAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        if user.get_name() == "outsider" and details is not None and (details.id or "").startswith("fraud_"):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
