from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("vfolders", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="quotascope",
            name="limit_bytes",
            field=models.BigIntegerField(
                blank=True, null=True,
                help_text="Hard limit set for this scope (bytes). Empty: the resource policy's "
                          "max_quota_scope_size, else the host's default quota."),
        ),
    ]
