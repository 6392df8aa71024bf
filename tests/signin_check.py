"""Answering the sign-in check (experiments.signin.challenge) as the browser's script does."""

from __future__ import annotations

import itertools
import re
from html import unescape

from experiments.signin.challenge import answer_solves


def check_fields(page: str) -> dict[str, str] | None:
    """The form fields that answer the check on a sign-in page, or None when it asks none."""
    seed = re.search(r'data-challenge-seed="([^"]+)"', page)
    if seed is None:
        return None
    bits = int(re.search(r'data-challenge-bits="(\d+)"', page).group(1))
    token = unescape(re.search(r'name="challenge" value="([^"]+)"', page).group(1))
    answer = next(str(n) for n in itertools.count() if answer_solves(seed=seed.group(1), answer=str(n), bits=bits))
    return {"challenge": token, "challenge_answer": answer}
