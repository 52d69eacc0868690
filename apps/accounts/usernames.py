"""Look-alike usernames: refuse a name that mixes scripts or that reads the same as an existing one.

``оperator`` with a Cyrillic о, ``ｏｐｅｒａｔｏｒ`` in full-width letters and ``Operator`` all pass Django's
username validator and its (case-sensitive) uniqueness, yet read as ``operator`` to a person approving a
request or reading the audit log. Two checks, on the standard library's Unicode data:

- one script per name (after NFKC): letters from Latin and Cyrillic, or Latin and Greek, are refused.
  The mixes Unicode TS #39 calls "highly restrictive" stay allowed: Latin with Han and Japanese kana,
  with Han and Bopomofo, or with Han and Hangul;
- a skeleton compared with every existing username's skeleton: NFKC, case folding, NFKC again, then
  every character that Unicode's confusables table (``confusable_homoglyphs``) says looks like a
  Latin one replaced by it, so a name written wholly in another script that reads as a Latin one
  (all-Cyrillic ``соре`` against ``cope``) is caught too, while ``иван`` stays a name of its own.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from confusable_homoglyphs import confusables
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

# Scripts that may share a name with Latin (UTS #39, "highly restrictive"), as sets of script names.
ALLOWED_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
# Unicode character names that do not start with their script's name (None: shared by several scripts).
_NAME_TO_SCRIPT: dict[str, str | None] = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "KATAKANA-HIRAGANA": None}

MIXED_SCRIPTS = "Use letters of one script only: this name mixes {scripts}, which lets it look like another name."
LOOKS_TAKEN = "A user with a name that looks the same already exists."


def skeleton(name: str) -> str:
    """What a name reads as, for comparing: NFKC folds compatibility forms (full-width, ligatures),
    case folding folds case (NFKC again because case folding can undo normalization), and letters
    that look like Latin ones become those."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return "".join(map(_latin_look_alike, folded))


@lru_cache(maxsize=65536)
def _latin_look_alike(char: str) -> str:
    """The Latin character ``char`` looks like (itself when it is Latin or looks like none); cached, so
    comparing with every existing username costs a dictionary lookup per character."""
    for entry in confusables.is_confusable(char, preferred_aliases=["latin"]) or []:
        latin = [glyph["c"] for glyph in entry["homoglyphs"] if len(glyph["c"]) == 1]
        if latin:
            return latin[0].casefold()
    return char


def script_of(char: str) -> str | None:
    """The script of a letter, from its Unicode name (LATIN, CYRILLIC, GREEK, HAN, …); None for anything else."""
    if not char.isalpha():
        return None
    first = unicodedata.name(char, "UNKNOWN").split()[0]
    return _NAME_TO_SCRIPT.get(first, first)


def scripts_in(name: str) -> frozenset[str]:
    return frozenset(filter(None, map(script_of, unicodedata.normalize("NFKC", name))))


def check_one_script(name: str) -> None:
    """Refuse a name whose letters come from scripts that may not be mixed."""
    scripts = scripts_in(name)
    if len(scripts) <= 1 or any(scripts <= allowed for allowed in ALLOWED_MIXES):
        return
    names = " and ".join(sorted(script.title() for script in scripts))
    raise ValidationError(MIXED_SCRIPTS.format(scripts=names), "mixed_script")


def check_not_like_existing(name: str, *, exclude_pk=None) -> None:
    """Refuse a name whose skeleton is an existing user's. Scans every username: fine for the thousands
    of accounts an installation has; a stored skeleton column would be the next step beyond that."""
    wanted = skeleton(name)
    users = get_user_model().objects.exclude(pk=exclude_pk).values_list("username", flat=True)
    if any(skeleton(existing) == wanted for existing in users.iterator()):
        raise ValidationError(LOOKS_TAKEN, "looks_taken")
