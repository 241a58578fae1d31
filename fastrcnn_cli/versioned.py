"""Versioned files: the one check of the header that every fastrcnn file format starts with.

Each format fastrcnn writes (a checkpoint, a proposal cache's ``proposals.json``, a detections file) begins with
a small header: ``{"format": "<tag>", "<version key>": <whole number>, ...}``. A reader accepts a file of its
own format at any version up to the newest it knows -- older versions stay readable, newer fields are ignored
by the format's own code -- and refuses, with a message naming the file, anything else: a file that is not
of this format, a version that is not a whole number, or a version newer than this fastrcnn reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fastrcnn_cli.errors import InputError


@dataclass(frozen=True)
class FileFormat:
    """One fastrcnn file format: the ``format`` tag of its header and the newest version this fastrcnn reads.

    ``noun`` names the file in messages ("not a fastrcnn checkpoint"); ``version_key`` is the header's version
    field (the detections file has ``version``, the others ``format_version``); ``error`` is the exception
    raised, an :class:`InputError` subclass; ``hint`` says how to get a right file, ``newer_hint`` what to do
    besides upgrading when the file is newer.
    """

    tag: str
    version: int
    noun: str
    version_key: str = "format_version"
    error: type[InputError] = InputError
    hint: str = ""
    newer_hint: str = ""

    def header(self) -> dict[str, Any]:
        """The header fields a file of this format is written with (at the newest version)."""
        return {"format": self.tag, self.version_key: self.version}

    def check(self, header: object, path: str | os.PathLike | None = None) -> int:
        """The version of a file whose parsed header is ``header``; :attr:`error` naming ``path`` when the file
        is not of this format or is newer than this fastrcnn reads. A missing version counts as 0 (the files
        written before versions were recorded)."""
        if not isinstance(header, dict) or header.get("format") != self.tag:
            found = header.get("format") if isinstance(header, dict) else None
            what = f"its format is {found!r}" if isinstance(found, str) else f"no 'format: {self.tag}' entry"
            raise self.error(f"not a {self.noun} ({what}{'; ' + self.hint if self.hint else ''})", path)
        value = header.get(self.version_key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
            raise self.error(f"not a {self.noun} (its {self.version_key} {value!r} is not a whole number)", path)
        version = int(value)
        if version > self.version:
            raise self.error(
                f"written by a newer fastrcnn ({self.noun} format {version}; this one reads up to {self.version}); "
                f"upgrade fastrcnn{' ' + self.newer_hint if self.newer_hint else ''}",
                path,
            )
        return version
