"""The usage tables, taken over from billing in Django's state only: the tables keep their
names (billing_usageevent, billing_usagerollup) and their data, so nothing runs against
the database. billing's migration 0007 drops them from billing's state."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("console", "0003_staff_audit_entry"),
        ("billing", "0006_stripe_sync"),  # created the tables
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="UsageEvent",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("request_id", models.CharField(max_length=40)),
                        ("at", models.DateTimeField(default=django.utils.timezone.now, help_text="When the request arrived.")),
                        (
                            "key_id",
                            models.CharField(
                                blank=True, help_text="Public id of the API key; empty for console playground calls.", max_length=40
                            ),
                        ),
                        ("endpoint", models.CharField(max_length=30)),
                        ("model", models.CharField(help_text="The model name the caller asked for.", max_length=100)),
                        (
                            "route",
                            models.CharField(
                                blank=True, help_text="The route that served it; empty when the name was a deployment's.", max_length=100
                            ),
                        ),
                        ("target", models.CharField(blank=True, max_length=200)),
                        ("deployment_id", models.CharField(blank=True, max_length=40)),
                        ("region", models.CharField(blank=True, max_length=40)),
                        ("status", models.PositiveSmallIntegerField()),
                        ("error_code", models.CharField(blank=True, max_length=60)),
                        ("streamed", models.BooleanField(default=False)),
                        ("attempts", models.PositiveSmallIntegerField(default=0)),
                        ("input_tokens", models.PositiveIntegerField(default=0)),
                        ("output_tokens", models.PositiveIntegerField(default=0)),
                        ("latency_ms", models.FloatField()),
                        ("ttft_ms", models.FloatField(blank=True, null=True)),
                        ("cost", models.DecimalField(decimal_places=12, default=0, max_digits=24)),
                        (
                            "organization",
                            models.ForeignKey(
                                db_constraint=False,
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="console.organization",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "billing_usageevent",
                        "ordering": ["-at"],
                        "indexes": [models.Index(fields=["organization", "at"], name="usage_org_at")],
                        "constraints": [models.UniqueConstraint(fields=("request_id",), name="one_usage_event_per_request")],
                    },
                ),
                migrations.CreateModel(
                    name="UsageRollup",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("granularity", models.CharField(choices=[("minute", "Minute"), ("hour", "Hour"), ("day", "Day")], max_length=6)),
                        ("bucket", models.DateTimeField()),
                        (
                            "breakdown",
                            models.CharField(
                                choices=[
                                    ("all", "Every dimension"),
                                    ("none", "Organization total"),
                                    ("route", "Route"),
                                    ("deployment_id", "Deployment"),
                                    ("region", "Region"),
                                    ("key_id", "API key"),
                                    ("model", "Model"),
                                ],
                                default="all",
                                max_length=13,
                            ),
                        ),
                        ("route", models.CharField(blank=True, max_length=100)),
                        ("deployment_id", models.CharField(blank=True, max_length=40)),
                        ("region", models.CharField(blank=True, max_length=40)),
                        ("key_id", models.CharField(blank=True, max_length=40)),
                        ("model", models.CharField(blank=True, max_length=100)),
                        ("requests", models.PositiveBigIntegerField(default=0)),
                        ("client_errors", models.PositiveBigIntegerField(default=0, help_text="4xx answers.")),
                        ("server_errors", models.PositiveBigIntegerField(default=0, help_text="5xx answers.")),
                        ("input_tokens", models.PositiveBigIntegerField(default=0)),
                        ("output_tokens", models.PositiveBigIntegerField(default=0)),
                        ("cost", models.DecimalField(decimal_places=12, default=0, max_digits=30)),
                        ("latency_histogram", models.JSONField(default=dict, help_text="Bucket index -> count (metering.histogram).")),
                        (
                            "organization",
                            models.ForeignKey(
                                db_constraint=False,
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="console.organization",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "billing_usagerollup",
                        "constraints": [
                            models.UniqueConstraint(
                                fields=(
                                    "organization",
                                    "granularity",
                                    "bucket",
                                    "breakdown",
                                    "route",
                                    "deployment_id",
                                    "region",
                                    "key_id",
                                    "model",
                                ),
                                name="one_rollup_per_bucket_and_dimensions",
                            )
                        ],
                    },
                ),
            ],
        ),
    ]
