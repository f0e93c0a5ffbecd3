"""Seeds the GPU types and their list prices (see deployments/gpu_catalog.py for sources)."""

from django.db import migrations


def seed(apps, schema_editor):
    from deployments.gpu_catalog import ensure_gpu_types

    ensure_gpu_types(apps.get_model("deployments", "GpuType"))


class Migration(migrations.Migration):
    dependencies = [("deployments", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
