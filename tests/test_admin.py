import re

import pytest
from django.urls import reverse

from realtime import keys
from realtime.auth import authenticate_secret
from realtime.models import AccessKey, Channel

SECRET_RE = re.compile(r"rt_[A-Za-z0-9_-]{43}")

KEYS_URL = reverse("admin:realtime_accesskey_changelist")
CHANNELS_URL = reverse("admin:realtime_channel_changelist")


def change_url(key):
    return reverse("admin:realtime_accesskey_change", args=[key.pk])


def regenerate_url(key):
    return reverse("admin:realtime_accesskey_regenerate", args=[key.pk])


@pytest.fixture
def announced(monkeypatch):
    """Records the notify_changed() calls the admin makes."""
    calls = []
    monkeypatch.setattr("realtime.admin.notify_changed", lambda: calls.append(True))
    return calls


@pytest.fixture
def news(db):
    return Channel.objects.create(name="news", description="Top stories of the day " * 5, anonymous_read=True)


@pytest.fixture
def rooms(db):
    return Channel.objects.create(name="rooms", include_subchannels=True)


def post_action(client, url, action, objects):
    return client.post(url, {"action": action, "_selected_action": [obj.pk for obj in objects]}, follow=True)


# Channels ------------------------------------------------------------------------------


def test_channel_changelist_lists_channels(admin_client, news, rooms):
    response = admin_client.get(CHANNELS_URL)
    assert response.status_code == 200
    content = response.content.decode()
    assert "news" in content and "rooms" in content
    assert "Top stories of the day Top stories of t…" in content  # 40 characters: the list fits 1280 px


@pytest.mark.parametrize(
    "query, shown, hidden",
    [
        ({"q": "roo"}, "rooms", "news"),
        ({"q": "stories"}, "news", "rooms"),
        ({"anonymous_read__exact": "1"}, "news", "rooms"),
        ({"include_subchannels__exact": "1"}, "rooms", "news"),
        ({"is_active__exact": "1"}, "news", None),
    ],
)
def test_channel_changelist_searches_and_filters(admin_client, news, rooms, query, shown, hidden):
    response = admin_client.get(CHANNELS_URL, query)
    assert response.status_code == 200
    names = [channel.name for channel in response.context["cl"].result_list]
    assert shown in names
    assert hidden not in names


def test_channel_change_form_shows_the_channel_and_its_options(admin_client, news):
    response = admin_client.get(reverse("admin:realtime_channel_change", args=[news.pk]))
    form = response.context["adminform"].form
    assert form.instance == news
    assert form["name"].value() == "news"
    assert form["anonymous_read"].value() is True and form["include_subchannels"].value() is False
    content = response.content.decode()
    assert 'value="news"' in content and news.description in content
    headings = re.findall(r'<h2 [^>]*class="fieldset-heading">([^<]*)</h2>', content)
    assert headings == ["History", "Presence", "Programmable", "Tree and envelope", "Dates"]
    assert "Kept publications let clients recover what they missed" in content


CHANNEL_FORM = {
    "name": "feed",
    "description": "",
    "is_active": "on",
    "history_size": "100",
    "history_ttl": "3600",
}


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"history_durable": "on"}, None),
        ({"history_durable": "on", "history_size": "0"}, "A durable history needs a history size."),
        ({"presence": "on", "join_leave": "on"}, None),
        ({"join_leave": "on"}, "Join and leave events need presence."),
    ],
)
def test_channel_history_and_presence_options_are_validated_in_the_admin(admin_client, extra, error):
    response = admin_client.post(reverse("admin:realtime_channel_add"), {**CHANNEL_FORM, **extra})

    if error is None:
        assert response.status_code == 302 and response.url == CHANNELS_URL
        feed = Channel.objects.get(name="feed")
        assert feed.history_size == 100 and feed.history_ttl == 3600
        assert (feed.history_durable, feed.presence, feed.join_leave) == (
            "history_durable" in extra,
            "presence" in extra,
            "join_leave" in extra,
        )
    else:
        assert response.status_code == 200
        assert error in response.content.decode()
        assert not Channel.objects.filter(name="feed").exists()


def test_bulk_deactivate_and_activate_channels_announce_the_change(
    admin_client, news, rooms, announced, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_action(admin_client, CHANNELS_URL, "deactivate", [news, rooms])
    assert "Deactivated 2 channels." in response.content.decode()
    assert not Channel.objects.filter(is_active=True).exists()
    assert len(announced) == 1
    with django_capture_on_commit_callbacks(execute=True):
        response = post_action(admin_client, CHANNELS_URL, "activate", [news])
    assert "Activated 1 channel." in response.content.decode()
    assert Channel.objects.get(pk=news.pk).is_active
    assert not Channel.objects.get(pk=rooms.pk).is_active
    assert len(announced) == 2


# Access keys: lists --------------------------------------------------------------------


@pytest.fixture
def writer(news, rooms):
    key, _ = AccessKey.objects.create_key(name="writer", access="read-write", channels=[news, rooms])
    return key


@pytest.fixture
def reader(db):
    key, _ = AccessKey.objects.create_key(name="reader", access="read-only", all_channels=True)
    return key


def test_key_changelist_shows_scope_and_prefix_but_no_hash(admin_client, writer, reader):
    response = admin_client.get(KEYS_URL)
    assert response.status_code == 200
    content = response.content.decode()
    assert "news, rooms" in content
    assert "all channels" in content
    assert f"{writer.secret_prefix}…" in content
    assert writer.secret_hash not in content
    assert reader.secret_hash not in content


def test_key_changelist_shortens_long_scopes(admin_client, db):
    channels = [Channel.objects.create(name=f"c{i}") for i in range(5)]
    AccessKey.objects.create_key(name="many", access="read-only", channels=channels)
    response = admin_client.get(KEYS_URL)
    assert "c0, c1, c2 +2" in response.content.decode()


@pytest.mark.parametrize(
    "query, shown, hidden",
    [
        ({"q": "writ"}, "writer", "reader"),
        ({"access__exact": "read-only"}, "reader", "writer"),
        ({"all_channels__exact": "0"}, "writer", "reader"),
        ({"is_active__exact": "1"}, "writer", None),
        ({"expires_at__isnull": "True"}, "reader", None),
    ],
)
def test_key_changelist_searches_and_filters(admin_client, writer, reader, query, shown, hidden):
    response = admin_client.get(KEYS_URL, query)
    assert response.status_code == 200
    names = [key.name for key in response.context["cl"].result_list]
    assert shown in names
    assert hidden not in names


def test_key_search_by_prefix(admin_client, writer, reader):
    response = admin_client.get(KEYS_URL, {"q": writer.secret_prefix})
    assert [key.name for key in response.context["cl"].result_list] == ["writer"]


def test_key_search_by_a_whole_secret_finds_its_key(admin_client, reader):
    key, secret = AccessKey.objects.create_key(name="leaked", access="read-only", all_channels=True)
    response = admin_client.get(KEYS_URL, {"q": secret})
    assert [found.name for found in response.context["cl"].result_list] == ["leaked"]


# Access keys: creating shows the secret once --------------------------------------------


def add_key(client, **fields):
    data = {"name": "service", "access": "read-write", "is_active": "on", **fields}
    return client.post(reverse("admin:realtime_accesskey_add"), data)


def test_adding_a_key_shows_its_secret_once_and_stores_only_the_hash(admin_client, news, announced):
    response = add_key(admin_client, channels=[news.pk])
    assert response.status_code == 200
    content = response.content.decode()
    secret = SECRET_RE.search(content).group()
    assert "it will not be shown again" in content
    key = AccessKey.objects.get(name="service")
    assert key.secret_hash == keys.hash_secret(secret)
    assert secret not in (key.secret_hash, key.secret_prefix)
    assert secret.startswith(key.secret_prefix)
    principal = authenticate_secret(secret)
    assert principal.can_write and principal.channel_ids == {news.pk}
    assert response.context["next_url"] == KEYS_URL

    change_page = admin_client.get(change_url(key)).content.decode()
    assert secret not in change_page
    assert key.secret_hash not in change_page
    assert f"{key.secret_prefix}…" in change_page
    assert SECRET_RE.search(change_page) is None


def test_adding_a_key_keeps_the_secret_out_of_messages_and_the_next_page(admin_client, news):
    secret_page = add_key(admin_client, channels=[news.pk]).content.decode()
    assert "was added successfully" in secret_page
    secret = SECRET_RE.search(secret_page).group()
    assert all(secret not in morsel.value for morsel in admin_client.cookies.values())
    assert secret not in str(dict(admin_client.session))
    assert secret not in admin_client.get(KEYS_URL).content.decode()


def test_adding_a_key_with_save_and_continue_leads_to_its_change_page(admin_client, news):
    response = add_key(admin_client, all_channels="on", _continue="1")
    key = AccessKey.objects.get(name="service")
    assert response.context["next_url"] == change_url(key)
    assert key.all_channels


def test_adding_a_key_without_a_scope_is_refused(admin_client, db):
    response = add_key(admin_client)
    assert response.status_code == 200
    assert "or tick “all channels”" in response.content.decode()
    assert not AccessKey.objects.exists()


def test_add_form_has_no_secret_fields(admin_client, db):
    response = admin_client.get(reverse("admin:realtime_accesskey_add"))
    assert list(response.context["adminform"].form.fields) == [
        "name",
        "access",
        "all_channels",
        "channels",
        "is_active",
        "expires_at",
    ]
    content = response.content.decode()
    assert 'name="name"' in content and 'name="access"' in content
    assert 'name="secret_hash"' not in content
    assert 'name="secret_prefix"' not in content


def test_changing_a_key_keeps_its_secret(admin_client, writer, news):
    before = writer.secret_hash
    response = admin_client.post(
        change_url(writer),
        {"name": "writer", "access": "read-only", "channels": [news.pk], "is_active": "on"},
    )
    assert response.status_code == 302
    writer.refresh_from_db()
    assert writer.access == "read-only"
    assert writer.secret_hash == before


# Access keys: regenerate --------------------------------------------------------------------


def test_change_form_links_to_regenerate(admin_client, writer):
    response = admin_client.get(change_url(writer))
    assert regenerate_url(writer) in response.content.decode()


def test_regenerate_asks_for_confirmation_first(admin_client, writer):
    before = writer.secret_hash
    response = admin_client.get(regenerate_url(writer))
    assert response.status_code == 200
    assert "Yes, regenerate the secret" in response.content.decode()
    writer.refresh_from_db()
    assert writer.secret_hash == before


def test_regenerate_replaces_the_hash_and_shows_the_new_secret_once(admin_client, news):
    key, old = AccessKey.objects.create_key(name="k", access="read-write", channels=[news])
    response = admin_client.post(regenerate_url(key))
    assert response.status_code == 200
    content = response.content.decode()
    new = SECRET_RE.search(content).group()
    assert new != old
    assert "it will not be shown again" in content
    assert response.context["next_url"] == change_url(key)
    key.refresh_from_db()
    assert key.secret_hash == keys.hash_secret(new)
    assert authenticate_secret(new).key_id == key.pk
    assert new not in admin_client.get(change_url(key)).content.decode()


def test_regenerating_a_revoked_key_warns_that_it_is_revoked(admin_client, reader):
    AccessKey.objects.filter(pk=reader.pk).update(is_active=False)
    content = admin_client.post(regenerate_url(reader)).content.decode()
    assert "revoked or expired" in content


def test_regenerate_of_a_missing_key_is_404_and_changes_nothing(admin_client, writer):
    before = writer.secret_hash
    response = admin_client.post(reverse("admin:realtime_accesskey_regenerate", args=[writer.pk + 1]))
    assert response.status_code == 404
    assert SECRET_RE.search(response.content.decode()) is None
    writer.refresh_from_db()
    assert writer.secret_hash == before


def test_regenerate_needs_change_permission(client, django_user_model, writer):
    staff = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    staff.user_permissions.add(*_permissions("view_accesskey"))
    client.force_login(staff)
    before = writer.secret_hash
    assert client.post(regenerate_url(writer)).status_code == 403
    writer.refresh_from_db()
    assert writer.secret_hash == before
    assert regenerate_url(writer) not in client.get(change_url(writer)).content.decode()


def _permissions(*codenames):
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(content_type__app_label="realtime", codename__in=codenames)


# Access keys: bulk actions --------------------------------------------------------------------


def test_bulk_revoke_and_reactivate_keys_announce_the_change(
    admin_client, writer, reader, announced, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_action(admin_client, KEYS_URL, "revoke", [writer, reader])
    assert "Revoked 2 keys." in response.content.decode()
    assert not AccessKey.objects.filter(is_active=True).exists()
    assert len(announced) == 1
    with django_capture_on_commit_callbacks(execute=True):
        response = post_action(admin_client, KEYS_URL, "reactivate", [reader])
    assert "Reactivated 1 key." in response.content.decode()
    assert AccessKey.objects.get(pk=reader.pk).is_active
    assert not AccessKey.objects.get(pk=writer.pk).is_active
    assert len(announced) == 2


def test_bulk_delete_keys_goes_through_normal_deletion(admin_client, writer, reader):
    response = admin_client.post(
        KEYS_URL, {"action": "delete_selected", "_selected_action": [writer.pk], "post": "yes"}, follow=True
    )
    assert "Successfully deleted 1 access key." in response.content.decode()
    assert list(AccessKey.objects.values_list("name", flat=True)) == ["reader"]
