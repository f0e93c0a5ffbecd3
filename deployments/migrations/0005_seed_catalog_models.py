from django.db import migrations


def seed(apps, schema_editor):
    from deployments.model_catalog import ensure_builtin_models

    ensure_builtin_models(apps.get_model("deployments", "CatalogModel"))


class Migration(migrations.Migration):
    dependencies = [("deployments", "0004_catalog_models")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
