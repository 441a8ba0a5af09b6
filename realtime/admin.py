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

from . import keys
from .changes import notify_changed
from .models import AccessKey, Channel

SCOPE_NAMES_SHOWN = 3


def _announce() -> None:
    # After commit: servers re-read the database when told, so they must see the change.
    transaction.on_commit(notify_changed)


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "is_active",
        "include_subchannels",
        "anonymous_read",
        "history_size",
        "presence",
        "description_snippet",
        "updated_at",
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

    @admin.display(description=_("description"))
    def description_snippet(self, channel: Channel) -> str:
        return Truncator(channel.description).chars(60)

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
class AccessKeyAdmin(admin.ModelAdmin):
    form = AccessKeyForm
    list_display = [
        "name",
        "access",
        "scope",
        "is_active",
        "expires_at",
        "last_used_at",
        "created_at",
        "secret_starts_with",
    ]
    list_filter = ["access", "is_active", "all_channels", "expires_at"]
    search_fields = ["name", "secret_prefix"]
    filter_horizontal = ["channels"]
    actions = ["revoke", "reactivate"]
    secret_template = "admin/realtime/accesskey/secret.html"
    regenerate_template = "admin/realtime/accesskey/regenerate_confirmation.html"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("channels")

    def get_fieldsets(self, request, obj=None):
        main = (None, {"fields": ["name", "access", "all_channels", "channels", "is_active", "expires_at"]})
        if obj is None:
            return [main]
        return [main, (_("Secret and use"), {"fields": ["secret_starts_with", "created_at", "last_used_at"]})]

    def get_readonly_fields(self, request, obj=None):
        return ["secret_starts_with", "created_at", "last_used_at"] if obj is not None else []

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

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_regenerate"
        regenerate = path(
            "<path:object_id>/regenerate/", self.admin_site.admin_view(self.regenerate_view), name=name
        )
        return [regenerate, *super().get_urls()]

    def regenerate_view(self, request, object_id):
        """GET asks for confirmation; POST replaces the secret and shows the new one once."""
        key = self.get_object(request, unquote(object_id))
        if key is None:
            raise Http404(_("No access key with this id."))
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        if request.method == "POST":
            secret = key.set_new_secret()
            key.save(update_fields=["secret_hash", "secret_prefix"])
            self.log_change(request, key, "Regenerated the secret.")
            return self.render_secret(request, key, secret, self._change_url(key), created=False)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Regenerate the secret of %s?") % key,
            "opts": self.opts,
            "object": key,
        }
        return TemplateResponse(request, self.regenerate_template, context)

    def render_secret(self, request, key: AccessKey, secret: str, next_url: str, *, created: bool):
        context = {
            **self.admin_site.each_context(request),
            "title": _("Copy the secret of %s") % key,
            "opts": self.opts,
            "object": key,
            "secret": secret,
            "created": created,
            "next_url": next_url,
        }
        return TemplateResponse(request, self.secret_template, context)

    def _change_url(self, key: AccessKey) -> str:
        return reverse(
            f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_change", args=[key.pk]
        )
