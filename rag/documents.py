"""Knowledge-base documents: stable ids for citation, metadata, content hashes, the policy handbook loader.

Every document has an id `KIND:KEY` (optionally `KIND:KEY#SECTION` for one section of a longer page):

- `sku:85123A`, `sku:FOODS_3_090/CA_1` - fact sheet of one SKU (item or item/store series)
- `category:FOODS_3`, `store:CA_1` - summaries per category or store
- `supplier:4466` - supplier lead-time sheet
- `report:weekly:2011-12-05` - weekly report (key = `weekly:` + the report's as-of date)
- `policy:service-levels#targets-by-abc-class` - one section of a page of the handbook in docs/policies/

The id depends only on what the document is about, never on its content, so a changed fact sheet keeps its
id (and its citations) while its content hash changes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forecasting.errors import InputError

DOC_KINDS = ("sku", "category", "store", "supplier", "report", "policy")
"""Kinds of document the knowledge base holds; a builder may add others that follow the same id rule."""

KEY_FIELD = {"sku": "sku", "category": "category", "store": "store", "supplier": "supplier", "report": "date"}
"""For each kind, the metadata field that carries the id's key (so filters like sku=85123A work)."""

_ID_RE = re.compile(r"^([a-z][a-z0-9_]*):([^\s#]+)(?:#([a-z0-9][a-z0-9-]*))?$")
_SLUG_RE = re.compile(r"[^a-z0-9]+")

Scalar = str | int | float | bool | None


def slugify(text: str) -> str:
    """Lower-case `text` and join its words with '-' ("Targets by ABC class" -> "targets-by-abc-class")."""
    return _SLUG_RE.sub("-", text.lower()).strip("-")


def make_id(kind: str, key: str | int, section: str | None = None) -> str:
    """Build a document id: make_id("sku", "85123A") -> "sku:85123A"; a section is slugified after '#'."""
    text = f"{kind}:{str(key).strip()}"
    if section:
        text += f"#{slugify(section)}"
    parse_id(text)
    return text


def parse_id(doc_id: str) -> tuple[str, str, str | None]:
    """Split an id into (kind, key, section or None); raise InputError when it does not follow the scheme."""
    m = _ID_RE.match(doc_id)
    if not m:
        raise InputError(
            f"bad document id {doc_id!r}: expected KIND:KEY or KIND:KEY#section, e.g. sku:85123A"
        )
    return m.group(1), m.group(2), m.group(3)


def _clean_value(value: Any) -> Scalar | list[Scalar]:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean_value(v) for v in value]  # type: ignore[misc]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


@dataclass(frozen=True, slots=True)
class KBDocument:
    """One retrievable text with a stable `id` and JSON-friendly `metadata` (always holds `type`)."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kind, _key, _section = parse_id(self.id)
        meta = {str(k): _clean_value(v) for k, v in self.metadata.items()}
        meta.setdefault("type", kind)
        object.__setattr__(self, "metadata", meta)
        if not isinstance(self.text, str) or not self.text.strip():
            raise InputError(f"document {self.id} has no text")

    @property
    def content_hash(self) -> str:
        """Hash of the text alone: the embedding and the lexical entry change only when this changes."""
        return text_hash(self.text)

    @property
    def kind(self) -> str:
        return parse_id(self.id)[0]

    def to_langchain(self, **extra: Any) -> Any:
        """This document as a langchain `Document`: id set, and `doc_id` plus `extra` added to metadata."""
        from langchain_core.documents import Document

        return Document(
            page_content=self.text, id=self.id, metadata={**self.metadata, "doc_id": self.id, **extra}
        )


def text_hash(text: str) -> str:
    """A 128-bit BLAKE2b hex digest of the text (UTF-8)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def make_document(
    kind: str, key: str | int, text: str, *, section: str | None = None, **metadata: Any
) -> KBDocument:
    """Build a document of `kind` about `key`; the key also goes into its metadata field (sku, supplier, ...).

    Builders pass the rest of the metadata as keywords: `run_id`, `date`, `supplier`, `store`, `title`.
    """
    meta: dict[str, Any] = {"type": kind}
    field_name = KEY_FIELD.get(kind)
    if field_name:
        meta[field_name] = str(key)
    meta.update({k: v for k, v in metadata.items() if v is not None})
    return KBDocument(make_id(kind, key, section), text, meta)


# ---------------------------------------------------------------- policy handbook (docs/policies/*.md)

DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[1] / "docs" / "policies"


def _split_sections(markdown: str) -> tuple[str | None, str, list[tuple[str, str]]]:
    """(page title, text before the first '## ', [(section heading, section body), ...])."""
    title: str | None = None
    intro: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for line in markdown.splitlines():
        if line.startswith("# ") and title is None and not sections:
            title = line[2:].strip()
        elif line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif sections:
            sections[-1][1].append(line)
        else:
            intro.append(line)
    return title, "\n".join(intro).strip(), [(h, "\n".join(b).strip()) for h, b in sections]


def load_policies(folder: str | Path | None = None) -> list[KBDocument]:
    """Load the procurement handbook: one document per '## ' section of every `*.md` page in `folder`.

    A page `service-levels.md` titled "# Service levels" gives `policy:service-levels#<section-slug>`
    documents whose text starts with "Service levels - <heading>" so each chunk stands on its own; a page
    without sections gives one document `policy:service-levels`. Metadata: type, page (the page id), title,
    section, source (file name).
    """
    folder = Path(folder) if folder is not None else DEFAULT_POLICY_DIR
    if not folder.is_dir():
        raise InputError(f"policy folder not found: {folder}")
    docs: list[KBDocument] = []
    for path in sorted(folder.glob("*.md")):
        page = slugify(path.stem)
        title, intro, sections = _split_sections(path.read_text(encoding="utf-8"))
        title = title or path.stem.replace("-", " ").capitalize()
        base = {"type": "policy", "page": f"policy:{page}", "title": title, "source": path.name}
        if not sections:
            docs.append(KBDocument(f"policy:{page}", f"{title}\n\n{intro}".strip(), base))
            continue
        seen: set[str] = set()
        for heading, body in sections:
            if not body:
                continue
            doc_id = make_id("policy", page, heading)
            if doc_id in seen:
                raise InputError(f"{path.name}: two sections are both called {heading!r}")
            lead = (
                f"{intro}\n\n" if intro and not seen else ""
            )  # the page's intro goes with its first section
            seen.add(doc_id)
            text = f"{title} - {heading}\n\n{lead}{body}".strip()
            docs.append(KBDocument(doc_id, text, {**base, "section": heading}))
    if not docs:
        raise InputError(f"no policy pages (*.md) in {folder}")
    return docs


def dedupe(docs: Iterable[KBDocument]) -> list[KBDocument]:
    """Keep the last document for every id, in first-seen order."""
    by_id: dict[str, KBDocument] = {}
    for doc in docs:
        by_id[doc.id] = doc
    return list(by_id.values())
