"""Admin for channels and access keys.

A key's secret is never stored, so the admin shows it exactly once: on the page
that answers the form that created the key, or the one that regenerated its secret.
That page is rendered in reply to the POST rather than carried to the next page in a
message, because messages travel in a cookie or the session and the secret would
then sit in both. ``QuerySet.update()`` sends no signals, so the bulk actions announce
their changes to live servers themselves.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import admin_live, keys
from .changes import notify_changed
from .models import WEBHOOK_EVENTS, AccessKey, Channel, WebhookEndpoint

SCOPE_NAMES_SHOWN = 3


def _announce() -> None:
    # After commit: servers re-read the database when told, so they must see the change.
    transaction.on_commit(notify_changed)


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    # Short headings and no dates: the list fits 1280 px beside the admin's sidebars.
    list_display = [
        "name",
        "is_active",
        "subchannels",
        "anonymous",
        "history",
        "presence",
        "description_snippet",
    ]
    list_filter = [
        "is_active",
        "include_subchannels",
        "anonymous_read",
        "history_durable",
        "presence",
        "bubble",
        "cloudevents",
    ]
    search_fields = ["name", "description"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description", "is_active", "include_subchannels", "anonymous_read"]}),
        (
            _("History"),
            {
                "fields": ["history_size", "history_ttl", "history_durable"],
                "description": _(
                    "Kept publications let clients recover what they missed after a reconnect "
                    "and read the channel's log over HTTP."
                ),
            },
        ),
        (_("Presence"), {"fields": ["presence", "join_leave"]}),
        (
            _("Programmable"),
            {
                "fields": ["personal", "webhook_publications"],
                "description": _(
                    "Personal channels per user, and webhooks for what clients publish (docs/hooks.md)."
                ),
            },
        ),
        (
            _("Tree and envelope"),
            {
                "fields": ["bubble", "cloudevents", "cloudevents_source"],
                "description": _(
                    "Bubbling delivers the publications of every channel below this one to its "
                    "subscribers too. CloudEvents wraps each publication in a CloudEvents 1.0 envelope."
                ),
            },
        ),
        (_("Dates"), {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    actions = ["activate", "deactivate"]
    change_list_template = "admin/realtime/channel/change_list.html"

    def get_urls(self):
        """The live view (``realtime.admin_live``) beside the channel list."""
        name = f"{self.opts.app_label}_{self.opts.model_name}_live"
        views = [
            ("live/", admin_live.page, "live"),
            ("live/data/", admin_live.data, "live_data"),
            ("live/presence/", admin_live.presence, "live_presence"),
            ("live/act/", admin_live.act, "live_act"),
        ]
        urls = [
            path(route, self.admin_site.admin_view(self._bound(view)), name=name.replace("live", suffix))
            for route, view, suffix in views
        ]
        return [*urls, *super().get_urls()]

    def _bound(self, view):
        def bound(request):
            return view(self, request)

        bound.__name__ = view.__name__
        return bound

    class Media:
        css = {"all": ["realtime/admin.css"]}

    @admin.display(description=_("sub-channels"), boolean=True, ordering="include_subchannels")
    def subchannels(self, channel: Channel) -> bool:
        return channel.include_subchannels

    @admin.display(description=_("anonymous"), boolean=True, ordering="anonymous_read")
    def anonymous(self, channel: Channel) -> bool:
        return channel.anonymous_read

    @admin.display(description=_("history"), ordering="history_size")
    def history(self, channel: Channel) -> str:
        if not channel.history_size:
            return "-"
        return f"{channel.history_size} (durable)" if channel.history_durable else str(channel.history_size)

    @admin.display(description=_("description"))
    def description_snippet(self, channel: Channel) -> str:
        return Truncator(" ".join(channel.description.split())).chars(40)

    @admin.action(description=_("Activate the selected channels"), permissions=["change"])
    def activate(self, request, queryset) -> None:
        count = queryset.update(is_active=True)
        _announce()
        self.message_user(request, ngettext("Activated %d channel.", "Activated %d channels.", count) % count)

    @admin.action(description=_("Deactivate the selected channels"), permissions=["change"])
    def deactivate(self, request, queryset) -> None:
        count = queryset.update(is_active=False)
        _announce()
        self.message_user(
            request, ngettext("Deactivated %d channel.", "Deactivated %d channels.", count) % count
        )


class SecretShownOnceAdmin(admin.ModelAdmin):
    """What the admins of models with a server-generated secret share (access keys,
    webhook endpoints): the secret is made on creation and shown once, on the page that
    answers the form, and a *regenerate* view replaces it and shows the new one once.

    Subclasses set ``secret_template``, ``regenerate_template``, ``secret_fields`` (what
    ``set_new_secret`` changes) and the wording: ``secret_name``, ``not_found``. Their
    templates extend the shared pages (``admin/realtime/secret_shown_once.html``,
    ``regenerate_secret.html``, ``secret_change_form.html``) with their own wording, and
    keep Django's per-model names, so a project can still override one model's page.
    """

    secret_template = ""
    regenerate_template = ""
    secret_fields: tuple[str, ...] = ()
    secret_name = _("secret")
    not_found = _("No such object.")

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj._new_secret = obj.set_new_secret()
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        response = super().response_add(request, obj, post_url_continue)
        secret = obj.__dict__.pop("_new_secret", None)
        if secret is None:
            return response
        next_url = response.url if isinstance(response, HttpResponseRedirect) else self._change_url(obj)
        return self.render_secret(request, obj, secret, next_url, created=True)

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_regenerate"
        regenerate = path(
            "<path:object_id>/regenerate/", self.admin_site.admin_view(self.regenerate_view), name=name
        )
        return [regenerate, *super().get_urls()]

    def regenerate_view(self, request, object_id):
        """GET asks for confirmation; POST replaces the secret and shows the new one once."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(self.not_found)
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        if request.method == "POST":
            secret = obj.set_new_secret()
            obj.save(update_fields=list(self.secret_fields))
            self.log_change(request, obj, f"Regenerated the {self.secret_name}.")
            return self.render_secret(request, obj, secret, self._change_url(obj), created=False)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Regenerate the %(secret)s of %(object)s?")
            % {"secret": self.secret_name, "object": obj},
            "opts": self.opts,
            "object": obj,
        }
        return TemplateResponse(request, self.regenerate_template, context)

    def render_secret(self, request, obj, secret: str, next_url: str, *, created: bool):
        context = {
            **self.admin_site.each_context(request),
            "title": _("Copy the %(secret)s of %(object)s") % {"secret": self.secret_name, "object": obj},
            "opts": self.opts,
            "object": obj,
            "secret": secret,
            "created": created,
            "next_url": next_url,
        }
        return TemplateResponse(request, self.secret_template, context)

    def _change_url(self, obj) -> str:
        return reverse(
            f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk]
        )


class AccessKeyForm(forms.ModelForm):
    class Meta:
        model = AccessKey
        fields = ["name", "access", "all_channels", "channels", "is_active", "expires_at"]

    def clean(self):
        cleaned = super().clean()
        if "channels" not in self.errors and not cleaned.get("all_channels") and not cleaned.get("channels"):
            raise ValidationError(
                _("Choose the channels this key is valid on, or tick “all channels”."), code="no_scope"
            )
        return cleaned


@admin.register(AccessKey)
class AccessKeyAdmin(SecretShownOnceAdmin):
    form = AccessKeyForm
    # Short headings, the access level without its explanation, no creation date: the list
    # fits 1280 px beside the admin's sidebars.
    list_display = [
        "name",
        "access_level",
        "scope",
        "is_active",
        "expires_at",
        "last_used_at",
        "secret_starts_with",
    ]
    list_filter = ["access", "is_active", "all_channels", "expires_at"]
    search_fields = ["name", "secret_prefix"]
    filter_horizontal = ["channels"]
    actions = ["revoke", "reactivate"]
    secret_template = "admin/realtime/accesskey/secret.html"
    regenerate_template = "admin/realtime/accesskey/regenerate_confirmation.html"
    secret_fields = ("secret_hash", "secret_prefix")
    not_found = _("No access key with this id.")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("channels")

    def get_fieldsets(self, request, obj=None):
        main = (None, {"fields": ["name", "access", "all_channels", "channels", "is_active", "expires_at"]})
        if obj is None:
            return [main]
        return [main, (_("Secret and use"), {"fields": ["secret_starts_with", "created_at", "last_used_at"]})]

    def get_readonly_fields(self, request, obj=None):
        return ["secret_starts_with", "created_at", "last_used_at"] if obj is not None else []

    class Media:
        css = {"all": ["realtime/admin.css"]}

    @admin.display(description=_("access"), ordering="access")
    def access_level(self, key: AccessKey) -> str:
        return key.access  # "read-write", without the choice's "(subscribe and publish)"

    @admin.display(description=_("scope"))
    def scope(self, key: AccessKey) -> str:
        return key.scope_summary(SCOPE_NAMES_SHOWN)

    @admin.display(description=_("secret starts with"), ordering="secret_prefix")
    def secret_starts_with(self, key: AccessKey) -> str:
        return f"{key.secret_prefix}…"

    def get_search_results(self, request, queryset, search_term):
        """Also find the key a whole pasted secret belongs to (by its hash), to revoke a leaked one."""
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term.startswith(keys.SECRET_PREFIX) and len(term) > keys.DISPLAY_LENGTH:
            results |= queryset.filter(secret_hash__in=keys.candidate_hashes(term))
        return results, may_have_duplicates

    @admin.action(description=_("Revoke the selected keys"), permissions=["change"])
    def revoke(self, request, queryset) -> None:
        count = queryset.update(is_active=False)
        _announce()
        self.message_user(request, ngettext("Revoked %d key.", "Revoked %d keys.", count) % count)

    @admin.action(description=_("Reactivate the selected keys"), permissions=["change"])
    def reactivate(self, request, queryset) -> None:
        count = queryset.update(is_active=True)
        _announce()
        self.message_user(request, ngettext("Reactivated %d key.", "Reactivated %d keys.", count) % count)


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(label=_("URL"), max_length=500, assume_scheme="https")
    events = forms.MultipleChoiceField(
        choices=WEBHOOK_EVENTS, widget=forms.CheckboxSelectMultiple, label=_("events")
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["name", "url", "events", "is_active"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(SecretShownOnceAdmin):
    """Endpoints for webhooks; the signing secret is shown once, on the page answering the
    form that created it or the one that regenerated it (as for access keys)."""

    form = WebhookEndpointForm
    list_display = ["name", "url", "event_list", "is_active", "created_at", "secret_starts_with"]
    list_filter = ["is_active"]
    search_fields = ["name", "url"]
    readonly_fields = ["secret_starts_with", "created_at"]
    secret_template = "admin/realtime/webhookendpoint/secret.html"
    regenerate_template = "admin/realtime/webhookendpoint/regenerate_confirmation.html"
    secret_fields = ("secret_sealed", "secret_prefix")
    secret_name = _("signing secret")
    not_found = _("No webhook endpoint with this id.")

    def get_fields(self, request, obj=None):
        fields = ["name", "url", "events", "is_active"]
        return fields if obj is None else [*fields, "secret_starts_with", "created_at"]

    @admin.display(description=_("events"))
    def event_list(self, endpoint: WebhookEndpoint) -> str:
        return ", ".join(endpoint.events)

    @admin.display(description=_("secret starts with"), ordering="secret_prefix")
    def secret_starts_with(self, endpoint: WebhookEndpoint) -> str:
        return f"{endpoint.secret_prefix}…"
