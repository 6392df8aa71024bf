"""The one reader of secrets given in the environment: NAME itself, or the file NAME_FILE names.

A mounted secret (Docker, Kubernetes, systemd credentials) is a file whose name goes in
NAME_FILE; the value never has to sit in the environment. Errors name the variable,
never its value. Pure: no Django, so settings can use it while they load.
"""

from __future__ import annotations

import os
from pathlib import Path


class SecretConfigError(ValueError):
    """NAME and NAME_FILE are both set, or the file cannot be read; the message names the variable only."""


def read_secret(name: str) -> str:
    """The secret from NAME or from the file NAME_FILE names, stripped; "" when neither is set."""
    value, file_name = os.environ.get(name, ""), os.environ.get(name + "_FILE", "")
    if value and file_name:
        raise SecretConfigError(f"Set {name} or {name}_FILE, not both.")
    if not file_name:
        return value.strip()
    try:
        # Mounted secrets usually end with a newline that is not part of the value.
        return Path(file_name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise SecretConfigError(f"The file named by {name}_FILE cannot be read ({why}).") from None
