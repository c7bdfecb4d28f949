"""``UsageRecord.request_id`` becomes the id the client saw (its own ``x-request-id`` when it
sent one, which may repeat); the unique key of a record moves to ``event_id``. Existing
records keep their request id as their event id."""

from django.db import migrations, models
from django.db.models import F


def copy_request_ids(apps, schema_editor):
    UsageRecord = apps.get_model("governance", "UsageRecord")
    UsageRecord.objects.update(event_id=F("request_id"))


class Migration(migrations.Migration):

    dependencies = [
        ("governance", "0004_usage_record_fewer_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="usagerecord",
            name="event_id",
            field=models.CharField(max_length=128, null=True),
        ),
        migrations.RunPython(copy_request_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="usagerecord",
            name="event_id",
            field=models.CharField(max_length=128, unique=True),
        ),
        migrations.AlterField(
            model_name="usagerecord",
            name="request_id",
            field=models.CharField(db_index=True, max_length=128),
        ),
    ]
