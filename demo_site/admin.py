from django.contrib import admin

from .models import ChatMessage


@admin.register(ChatMessage)
class ChatMessageAdmin(admin.ModelAdmin):
    list_display = ["room", "user", "text", "created_at"]
    list_filter = ["room"]
    search_fields = ["text", "user__username"]
    readonly_fields = ["created_at"]
