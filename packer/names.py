"""The member-naming rule: source paths <-> tar member names.

This module is the only place that decides how a source file's relative path
becomes a tar member name, and how to get the path back.  Everything else
(scan, write, index, verify, loaders) calls these functions.

WebDataset readers split a member name at the *first* dot of its basename
(``key = directory + basename up to the first dot``), lowercase the extension,
and silently drop names that start with a ``__...__`` component.  Source trees
do not follow those conventions (``IMG_1.v2.jpg``, ``__pycache__/``), so the
packer writes a *key* that survives the reader's split unchanged:

* the source's extension is the part of the basename after its last dot
  (``--key-rule last-dot``, the default) or after its first dot
  (``--key-rule first-dot``, for trees already laid out WebDataset-style,
  where ``x.seg.png`` belongs to sample ``x``); leading dots of a hidden file
  never start an extension, as with :func:`os.path.splitext`;
* in the key, ``%`` is written ``%25`` and a newline ``%0A`` everywhere (the
  reader's regular expression does not match across a newline), a ``.`` in
  the stem is written ``%2E``, and when the key starts with ``__`` its first
  ``_`` is written ``%5F`` (readers drop names starting ``__...__``);
* the member name is ``key + "." + extension``; an extension that readers
  would mistake (one starting with ``__``, like their ``__key__`` field, or
  holding a newline) is refused by :func:`extension_problem`.

Decoding is a plain percent-decoding of the key, so the original relative
path is always ``unescape_key(key) + "." + extension``.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

KEY_RULES = ("last-dot", "first-dot")

_ESCAPE_RE = re.compile(r"%(25|2E|5F|0A)")
_UNESCAPE = {"25": "%", "2E": ".", "5F": "_", "0A": "\n"}


def split_extension(basename: str, key_rule: str = "last-dot") -> Optional[Tuple[str, str]]:
    """Split a basename into (stem, extension); None when it has no extension.

    Leading dots belong to the stem (``.bashrc`` has no extension), and an
    empty extension (``name.``) counts as none.
    """
    lead = 0
    if basename.startswith("."):
        lead = len(basename) - len(basename.lstrip("."))
    body = basename[lead:] if lead else basename
    if key_rule == "last-dot":
        dot = body.rfind(".")
    elif key_rule == "first-dot":
        dot = body.find(".")
    else:
        raise ValueError(f"unknown key rule {key_rule!r}; expected one of {KEY_RULES}")
    if dot <= 0 or dot == len(body) - 1:
        return None
    return basename[: lead + dot], body[dot + 1 :]


def escape_key(relative_stem: str) -> str:
    """Key written to the tar for a source path without its extension.

    ``relative_stem`` uses ``/`` as separator.  The result contains no dot in
    its basename, never starts with a ``__...__`` component, and
    :func:`unescape_key` reverses it exactly.
    """
    key = relative_stem.replace("%", "%25") if "%" in relative_stem else relative_stem
    if "\n" in key:
        key = key.replace("\n", "%0A")
    slash = key.rfind("/")
    if key.find(".", slash + 1) >= 0:
        key = key[: slash + 1] + key[slash + 1 :].replace(".", "%2E")
    if key.startswith("__"):
        key = "%5F" + key[1:]
    return key


def extension_problem(extension: str) -> Optional[str]:
    """Why ``extension`` cannot be written so that readers see it, or None."""
    if extension.startswith("__"):
        return "extension starts with '__', which WebDataset readers reserve for __key__, __url__ etc."
    if "\n" in extension:
        return "extension contains a newline"
    return None


def unescape_key(key: str) -> str:
    """Inverse of :func:`escape_key`: the source path without its extension."""
    if "%" not in key:
        return key
    return _ESCAPE_RE.sub(lambda m: _UNESCAPE[m.group(1)], key)


def member_name(key: str, extension: str) -> str:
    """Tar member name of one file of a sample."""
    return f"{key}.{extension}"


def source_path(key: str, extension: str) -> str:
    """Original path of a member relative to the source root."""
    return f"{unescape_key(key)}.{extension}"


def reader_split(name: str) -> Tuple[Optional[str], Optional[str]]:
    """How WebDataset readers split a member name into (key, extension).

    Used by tests and ``verify`` to prove that every written name splits back
    into the intended key; it mirrors the reader's documented regular
    expression rather than importing webdataset, so the packer stays light.
    """
    match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    if not match:
        return None, None
    return match.group(1), match.group(2)
