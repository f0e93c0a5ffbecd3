"""Usage events and rollups move to the metering app (its migration 0001 takes them over
in Django's state); the tables and their data stay where they are."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0006_stripe_sync"),
        ("metering", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(
                    model_name="usagerollup",
                    name="organization",
                ),
                migrations.DeleteModel(
                    name="UsageEvent",
                ),
                migrations.DeleteModel(
                    name="UsageRollup",
                ),
            ],
        ),
    ]
