"""GpuPrice moves to the deployments app (its migration 0010 takes it over in Django's
state); the table and its rows stay where they are."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0007_usage_moves_to_metering"),
        ("deployments", "0010_gpu_price_book_moves_here"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(database_operations=[], state_operations=[migrations.DeleteModel(name="GpuPrice")]),
    ]
