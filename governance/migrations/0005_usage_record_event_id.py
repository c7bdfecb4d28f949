"""``UsageRecord.request_id`` becomes the id the client saw (its own ``x-request-id`` when it
sent one, which may repeat); the unique key of a record moves to ``event_id``. Existing
records keep their request id as their event id. The indexes of the record's text columns
are declared in ``Meta`` so that PostgreSQL builds no LIKE-prefix twin beside each."""

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
            field=models.CharField(max_length=128),
        ),
        migrations.AddConstraint(
            model_name="usagerecord",
            constraint=models.UniqueConstraint(fields=["event_id"], name="usage_event_id_unique"),
        ),
        migrations.AlterField(
            model_name="usagerecord",
            name="request_id",
            field=models.CharField(max_length=128),
        ),
        migrations.AddIndex(
            model_name="usagerecord",
            index=models.Index(fields=["request_id"], name="usage_request_id_idx"),
        ),
        migrations.AlterField(
            model_name="usagerecord",
            name="provider",
            field=models.CharField(max_length=50),
        ),
        migrations.AddIndex(
            model_name="usagerecord",
            index=models.Index(fields=["provider"], name="usage_provider_idx"),
        ),
        migrations.AlterField(
            model_name="usagerecord",
            name="resolved_model",
            field=models.CharField(max_length=255),
        ),
        migrations.AddIndex(
            model_name="usagerecord",
            index=models.Index(fields=["resolved_model"], name="usage_model_idx"),
        ),
    ]
