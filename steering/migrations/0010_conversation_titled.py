from django.db import migrations, models


def title_from_first_answers(apps, schema_editor):
    """Conversations named by their first prompt (eight "Where should I eat toni…") take the
    title their first answer gives, as new ones do."""
    from steering.services.chat import conversation_title

    Conversation = apps.get_model("steering", "Conversation")
    Message = apps.get_model("steering", "Message")
    for conversation in Conversation.objects.filter(titled=False).iterator():
        first = Message.objects.filter(conversation=conversation, role="assistant").exclude(content="").order_by("created_at", "pk").first()
        if first is None:
            continue
        asked = Message.objects.filter(conversation=conversation, role="user").order_by("created_at", "pk").first()
        conversation.title = conversation_title(prompt=asked.content if asked else conversation.title, answer=first.content)
        conversation.titled = True
        # update(), not save(): updated_at (the list's order and times) stays as it was.
        Conversation.objects.filter(pk=conversation.pk).update(title=conversation.title, titled=True)


class Migration(migrations.Migration):
    dependencies = [
        ("steering", "0009_dimension_kind_and_condition"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="titled",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(title_from_first_answers, migrations.RunPython.noop),
    ]
