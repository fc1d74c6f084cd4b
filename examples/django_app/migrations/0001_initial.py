from __future__ import annotations

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from liveupdates.integrations.django import outbox_migration


class Migration(migrations.Migration):  # type: ignore[misc]
    initial = True
    dependencies = [migrations.swappable_dependency(settings.AUTH_USER_MODEL)]  # noqa: RUF012
    operations = [  # noqa: RUF012
        migrations.CreateModel(
            name="Job",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("title", models.CharField(max_length=200)),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to=settings.AUTH_USER_MODEL
                    ),
                ),
            ],
        ),
        outbox_migration(),  # the table liveupdates.durable's relay publishes from
    ]
