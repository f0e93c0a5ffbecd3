"""Deployment rows leave half of each page free on PostgreSQL (fillfactor 50).

A fleet pass takes and gives back the lease of every deployment it looks at: two UPDATEs
of 10,000 rows each for a 10,000-deployment fleet. With full pages, each new row version
lands on another page and PostgreSQL adds it to all nine indexes of the table (about
0.55 s per UPDATE on this machine); with room on the page, an update of columns no index
covers (the lease's) stays on its page and touches no index ("HOT"), about 35 ms. Rows
written before this migration move as they are next updated. SQLite has no such setting.
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

FILLFACTOR = 50  # an UPDATE of every row on a page needs room for a second copy of each


def leave_room(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE deployments_deployment SET (fillfactor = {FILLFACTOR})")


def fill_pages(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE deployments_deployment RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0016_cluster_driver_ray"),
    ]

    operations = [migrations.RunPython(leave_room, fill_pages)]
