"""Channels and access keys, stored in the database and managed in the admin."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import keys, names, webhook_secrets
from .errors import InvalidChannelName


def validate_channel_name(value: str) -> None:
    try:
        names.validate_channel_name(value)
    except InvalidChannelName as error:
        raise ValidationError(error.detail, code="invalid_channel_name") from None


class Channel(models.Model):
    """A channel clients may subscribe and publish to.

    A channel with ``include_subchannels`` also covers every name below it
    (``rooms`` covers ``rooms/42`` and ``rooms/42/typing``), so rooms need no row
    each. A name resolves to the nearest row in its lineage that is either the name
    itself or covers sub-channels; see ``realtime.registry``.
    """

    name = models.CharField(
        _("name"),
        max_length=names.MAX_LENGTH,
        unique=True,
        validators=[validate_channel_name],
        help_text=_(
            "Segments of A-Z a-z 0-9 - _ . ! ~ ( ) $ @ separated by /, for example news or rooms/lobby."
        ),
    )
    description = models.TextField(_("description"), blank=True)
    is_active = models.BooleanField(
        _("active"),
        default=True,
        help_text=_("Inactive channels refuse subscriptions and publications; live subscribers are told."),
    )
    include_subchannels = models.BooleanField(
        _("covers sub-channels"),
        default=False,
        help_text=_("Also cover every channel below this one (rooms covers rooms/42)."),
    )
    anonymous_read = models.BooleanField(
        _("anonymous read"),
        default=False,
        help_text=_("Anyone may subscribe without credentials. Publishing always needs a key."),
    )
    history_size = models.PositiveIntegerField(
        _("history size"),
        default=0,
        help_text=_(
            "Publications kept per channel for history and recovery after a reconnect (0: no history). "
            "A channel covering sub-channels keeps this many for each of them."
        ),
    )
    history_ttl = models.PositiveIntegerField(
        _("history lifetime (seconds)"),
        default=24 * 3600,
        help_text=_("How long a publication is kept (0: as long as the history size allows)."),
    )
    history_durable = models.BooleanField(
        _("durable history"),
        default=False,
        help_text=_("Also keep the history in the database, so it survives Redis being flushed."),
    )
    presence = models.BooleanField(
        _("presence"),
        default=False,
        help_text=_("Subscribers may ask who else is subscribed."),
    )
    join_leave = models.BooleanField(
        _("join and leave events"),
        default=False,
        help_text=_("Subscribers are told when a member joins or leaves (needs presence)."),
    )
    personal = models.BooleanField(
        _("personal sub-channels"),
        default=False,
        help_text=_(
            "Each sub-channel <name>/<user id> (and everything below it) may be read only by that "
            "user (and by keys whose scope covers this channel), whatever tokens grant: "
            "users/42 is user 42's. Needs “covers sub-channels”."
        ),
    )
    webhook_publications = models.BooleanField(
        _("client publications to webhooks"),
        default=False,
        help_text=_("Send what clients publish here to the webhooks that take client_event."),
    )
    bubble = models.BooleanField(
        _("bubbling"),
        default=False,
        help_text=_(
            "Subscribers of this channel also receive publications on every channel below it "
            "(rooms receives rooms/42 and rooms/42/typing), once each, named by the channel they were "
            "made on. The history and the log of each channel stay its own."
        ),
    )
    cloudevents = models.BooleanField(
        _("CloudEvents"),
        default=False,
        help_text=_(
            "Publications are delivered as CloudEvents 1.0 (JSON format), and the HTTP endpoint accepts "
            "CloudEvents for this channel."
        ),
    )
    cloudevents_source = models.CharField(
        _("CloudEvents source"),
        max_length=500,
        blank=True,
        help_text=_(
            "The source attribute of the CloudEvents this channel produces (a URI reference). "
            "Blank: the channel's server-sent events URL, such as /realtime/sse?channel=rooms/42."
        ),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("channel")
        verbose_name_plural = _("channels")

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.history_durable and not self.history_size:
            raise ValidationError(
                {"history_durable": _("A durable history needs a history size.")}, code="no_history"
            )
        if self.join_leave and not self.presence:
            raise ValidationError(
                {"join_leave": _("Join and leave events need presence.")}, code="no_presence"
            )
        if self.personal and not self.include_subchannels:
            raise ValidationError(
                {"personal": _("Personal sub-channels need “covers sub-channels”.")}, code="not_covering"
            )
        if self.personal and self.anonymous_read:
            raise ValidationError(
                {"anonymous_read": _("Personal channels cannot be read anonymously.")}, code="personal"
            )
        if self.cloudevents_source and not self.cloudevents:
            raise ValidationError(
                {"cloudevents_source": _("A CloudEvents source needs the CloudEvents option.")},
                code="no_cloudevents",
            )
        if self.cloudevents_source and any(c.isspace() or ord(c) < 32 for c in self.cloudevents_source):
            raise ValidationError(
                {"cloudevents_source": _("A URI reference has no spaces or control characters.")},
                code="invalid_source",
            )


class AccessKeyQuerySet(models.QuerySet):
    def usable(self, now=None):
        now = now or timezone.now()
        return self.filter(is_active=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class AccessKeyManager(models.Manager.from_queryset(AccessKeyQuerySet)):
    def create_key(self, *, name: str, access: str, channels=(), all_channels: bool = False, **fields):
        """Create a key and return ``(key, secret)``. The secret is not kept anywhere."""
        key = self.model(name=name, access=access, all_channels=all_channels, **fields)
        secret = key.set_new_secret()
        key.full_clean()
        key.save()
        if channels:
            key.channels.set(channels)
        return key, secret


class AccessKey(models.Model):
    """A credential for servers and trusted clients.

    The secret is generated by the server, shown exactly once, and stored only as a
    keyed hash (``realtime.keys``). ``access`` decides what the key may do; the scope
    (all channels, or the chosen ``channels``) decides where.
    """

    READ_ONLY = "read-only"
    READ_WRITE = "read-write"
    ADMIN = "admin"
    ACCESS_CHOICES = [
        (READ_ONLY, _("read-only (subscribe)")),
        (READ_WRITE, _("read-write (subscribe and publish)")),
        (ADMIN, _("admin (read-write, the server API and metrics)")),
    ]

    name = models.CharField(_("name"), max_length=100, unique=True)
    access = models.CharField(_("access"), max_length=10, choices=ACCESS_CHOICES, default=READ_ONLY)
    all_channels = models.BooleanField(
        _("all channels"),
        default=False,
        help_text=_("Valid on every channel; otherwise only on the chosen ones."),
    )
    channels = models.ManyToManyField(
        Channel,
        blank=True,
        related_name="access_keys",
        verbose_name=_("channels"),
        help_text=_("A channel that covers sub-channels grants them too."),
    )
    is_active = models.BooleanField(
        _("active"), default=True, help_text=_("Revoked keys stop working at once.")
    )
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    secret_prefix = models.CharField(_("secret starts with"), max_length=16, editable=False)

    objects = AccessKeyManager()

    class Meta:
        ordering = ["name"]
        verbose_name = _("access key")
        verbose_name_plural = _("access keys")

    def __str__(self) -> str:
        return self.name

    def set_new_secret(self) -> str:
        """Give the key a fresh secret (not saved) and return it: the only time it is seen."""
        secret = keys.generate_secret()
        self.secret_hash = keys.hash_secret(secret)
        self.secret_prefix = keys.display_prefix(secret)
        return secret

    def scope_summary(self, names_shown: int = 3) -> str:
        """``all channels``, or the first channel names and how many more: for lists."""
        if self.all_channels:
            return str(_("all channels"))
        names = [channel.name for channel in self.channels.all()]
        if not names:
            return str(_("no channels"))
        hidden = len(names) - names_shown
        return ", ".join(names[:names_shown]) + (f" +{hidden}" if hidden > 0 else "")

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_usable(self) -> bool:
        return self.is_active and not self.is_expired


class Stream(models.Model):
    """Where a durable channel's history stands: its epoch and its last offset.

    Only channels with a durable history have one (``realtime.durable``). ``name`` is
    the channel published to (``rooms/42``), which may be covered by a row such as
    ``rooms`` rather than have a row of its own.
    """

    name = models.CharField(_("channel"), max_length=names.MAX_LENGTH, unique=True)
    epoch = models.CharField(_("epoch"), max_length=32)
    offset = models.BigIntegerField(_("last offset"), default=0)

    class Meta:
        verbose_name = _("durable stream")
        verbose_name_plural = _("durable streams")

    def __str__(self) -> str:
        return f"{self.name}@{self.epoch}:{self.offset}"


class StoredPublication(models.Model):
    """One publication of a durable stream, as the frame subscribers received."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="publications")
    offset = models.BigIntegerField(_("offset"))
    frame = models.TextField(_("frame"))
    created_at = models.DateTimeField(_("published"), default=timezone.now, db_index=True)

    class Meta:
        ordering = ["stream", "offset"]
        constraints = [
            models.UniqueConstraint(fields=["stream", "offset"], name="realtime_publication_offset"),
        ]
        verbose_name = _("stored publication")
        verbose_name_plural = _("stored publications")

    def __str__(self) -> str:
        return f"{self.stream.name}:{self.offset}"


WEBHOOK_EVENTS = [
    ("channel_occupied", _("channel occupied: the first member joined a channel with presence")),
    ("channel_vacated", _("channel vacated: the last member left a channel with presence")),
    ("member_added", _("member added: a member joined a channel with presence")),
    ("member_removed", _("member removed: a member left a channel with presence")),
    ("client_event", _("client event: a client published on a channel that sends publications to webhooks")),
]


class WebhookEndpointManager(models.Manager):
    def create_endpoint(self, *, name: str, url: str, events=(), **fields):
        """Create an endpoint and return ``(endpoint, secret)``: the only time the secret is seen."""
        endpoint = self.model(name=name, url=url, events=list(events), **fields)
        secret = endpoint.set_new_secret()
        endpoint.full_clean()
        endpoint.save()
        return endpoint, secret


class WebhookEndpoint(models.Model):
    """A URL that receives signed HTTP POSTs for some of realtime's events (``realtime.webhooks``).

    The signing secret is generated by the server, shown once, and stored encrypted
    under a key derived from ``SECRET_KEY`` (``realtime.webhook_secrets``): the server
    must recover it to sign every request.
    """

    name = models.CharField(_("name"), max_length=100, unique=True)
    url = models.URLField(_("URL"), max_length=500, help_text=_("Receives a POST per batch of events."))
    events = models.JSONField(
        _("events"), default=list, blank=True, help_text=_("The events this endpoint receives.")
    )
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    secret_sealed = models.TextField(editable=False)
    secret_prefix = models.CharField(_("secret starts with"), max_length=16, editable=False)

    objects = WebhookEndpointManager()

    class Meta:
        ordering = ["name"]
        verbose_name = _("webhook endpoint")
        verbose_name_plural = _("webhook endpoints")

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        known = {name for name, _label in WEBHOOK_EVENTS}
        if not isinstance(self.events, list) or not set(self.events) <= known:
            raise ValidationError({"events": _("Choose among the listed events.")}, code="unknown_event")

    def set_new_secret(self) -> str:
        """Give the endpoint a fresh signing secret (not saved) and return it."""
        secret = webhook_secrets.generate_secret()
        self.secret_sealed = webhook_secrets.seal(secret)
        self.secret_prefix = webhook_secrets.display_prefix(secret)
        return secret

    def secret(self) -> str | None:
        """The signing secret (decrypted), or None when SECRET_KEY changed without a fallback."""
        return webhook_secrets.unseal(self.secret_sealed)
