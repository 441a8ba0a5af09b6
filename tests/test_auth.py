from datetime import timedelta

import pytest
from django.utils import timezone

from realtime import keys
from realtime.auth import LAST_USED_RESOLUTION, authenticate_secret
from realtime.models import AccessKey


@pytest.fixture
def key_and_secret(db):
    return AccessKey.objects.create_key(name="service", access="read-write", all_channels=True)


def test_create_key_returns_a_secret_that_authenticates_and_keeps_only_its_hash(key_and_secret):
    key, secret = key_and_secret
    row = AccessKey.objects.values().get(pk=key.pk)
    assert secret.startswith(keys.SECRET_PREFIX) and secret.startswith(row["secret_prefix"])
    assert row["secret_hash"] == keys.hash_secret(secret)
    assert secret not in str(row)
    assert authenticate_secret(secret).key_id == key.pk


def last_used(key):
    return AccessKey.objects.values_list("last_used_at", flat=True).get(pk=key.pk)


def test_authenticating_records_when_the_key_was_last_used(key_and_secret):
    key, secret = key_and_secret
    assert last_used(key) is None
    before = timezone.now()

    authenticate_secret(secret)

    assert before <= last_used(key) <= timezone.now()


def test_a_second_auth_within_a_minute_leaves_last_used_unchanged(key_and_secret):
    key, secret = key_and_secret
    authenticate_secret(secret)
    first = last_used(key)

    authenticate_secret(secret)

    assert last_used(key) == first


def test_an_auth_more_than_a_minute_later_moves_last_used_forward(key_and_secret):
    key, secret = key_and_secret
    stale = timezone.now() - LAST_USED_RESOLUTION - timedelta(seconds=1)
    AccessKey.objects.filter(pk=key.pk).update(last_used_at=stale)

    authenticate_secret(secret)

    assert last_used(key) > stale + LAST_USED_RESOLUTION
