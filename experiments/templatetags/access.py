"""How the newcomer page shows whom to ask for access (DESK_ACCESS_CONTACT)."""

from __future__ import annotations

from django import template
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, URLValidator
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


def _valid(validator: EmailValidator | URLValidator, value: str) -> bool:
    try:
        validator(value)
    except ValidationError:
        return False
    return True


@register.filter
def contact_link(contact: str) -> SafeString:
    """An e-mail address as a mailto link, an http(s) address as a link, anything else as text."""
    if _valid(EmailValidator(), contact):
        return format_html('<a href="mailto:{}">{}</a>', contact, contact)
    if _valid(URLValidator(schemes=["http", "https"]), contact):
        return format_html('<a href="{}">{}</a>', contact, contact)
    return format_html("{}", contact)
