import pytest

from realtime.models import AccessKey, Channel


@pytest.mark.django_db
def test_create_key_returns_a_secret_that_is_not_stored():
    Channel.objects.create(name="news")
    key, secret = AccessKey.objects.create_key(name="k", access="read-write", all_channels=True)
    assert secret.startswith("rt_")
    assert secret not in (key.secret_hash, key.secret_prefix)
