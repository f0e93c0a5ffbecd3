"""GPU prices are set and shown per hour, the unit every GPU price list uses, and billed
by the second. Per-cluster prices go: they shaped estimates and placement but were never
billed, so they were prices nobody paid (the GPU price book has versions per
organization instead)."""

from decimal import Decimal

from django.db import migrations, models


def per_second_to_per_hour(apps, schema_editor):  # type: ignore[no-untyped-def]
    GpuPrice = apps.get_model("deployments", "GpuPrice")
    for price in GpuPrice.objects.all():
        price.price_per_hour = price.price_per_second * 3600
        price.save(update_fields=["price_per_hour"])


def per_hour_to_per_second(apps, schema_editor):  # type: ignore[no-untyped-def]
    GpuPrice = apps.get_model("deployments", "GpuPrice")
    for price in GpuPrice.objects.all():
        price.price_per_second = (price.price_per_hour / 3600).quantize(Decimal("0.000000000001"))
        price.save(update_fields=["price_per_second"])


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0010_gpu_price_book_moves_here"),
        ("billing", "0008_gpu_price_book_moves_to_deployments"),
    ]

    operations = [
        migrations.AddField(
            model_name="gpuprice",
            name="price_per_hour",
            field=models.DecimalField(decimal_places=9, max_digits=18, null=True),
        ),
        migrations.RunPython(per_second_to_per_hour, per_hour_to_per_second),
        migrations.RemoveField(model_name="gpuprice", name="price_per_second"),
        migrations.AlterField(
            model_name="gpuprice",
            name="price_per_hour",
            field=models.DecimalField(decimal_places=9, max_digits=18),
        ),
        migrations.RemoveField(model_name="clustergpu", name="price_per_hour"),
    ]
