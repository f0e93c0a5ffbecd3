"""The GPU part of the price book moves from billing to deployments, beside the GPU
catalog it prices, so the deploy estimate, placement and the gateway read the same
versions the invoice is rated with. In Django's state only: the table and its rows stay
(billing's migration 0008 lets go of it)."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0009_cluster_draining"),
        ("billing", "0007_usage_moves_to_metering"),
        ("console", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="GpuPrice",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("price_per_second", models.DecimalField(decimal_places=12, max_digits=20)),
                        ("effective_from", models.DateTimeField(help_text="On a whole hour (UTC).")),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        (
                            "gpu_type",
                            models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="+", to="deployments.gputype"),
                        ),
                        (
                            "organization",
                            models.ForeignKey(
                                blank=True,
                                help_text="Empty: the platform's price.",
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="console.organization",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "billing_gpuprice",
                        "ordering": ["gpu_type", "-effective_from"],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("organization", "gpu_type", "effective_from"), name="one_gpu_price_version", nulls_distinct=False
                            )
                        ],
                    },
                ),
            ],
        ),
    ]
