"""Knowledge-base documents built from one pipeline run (a FactBook) plus the policy handbook.

- `sku:<unique_id>`: the SKU's fact sheet (every fact of `FactBook.sku_facts`).
- `category:<name>`, `store:<name>`: totals over the SKUs of a category or store (when the data has them).
- `supplier:<name>`: lead-time statistics of a supplier (when a purchase-order history was given).
- `report:weekly:<YYYY-MM-DD>`: a weekly report from the store table `weekly_reports` (as_of, markdown_path,
  summary), its summary plus the Markdown file when it is readable.
- `policy:<page>#<section>`: the handbook in docs/policies (rag.documents.load_policies).

Every number in a document is a fact's value written by `llm.facts.format_fact`, the form the number guard
reads, so a document states exactly what the FactBook returns. Texts hold no run id (metadata does): a new
run re-embeds only the documents whose facts changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from forecasting.factbook import FactBook
from llm.facts import Fact, format_fact
from rag.documents import KBDocument, load_policies, make_document

REPORT_CHARS = 6000  # longest Markdown body of a weekly report put into its document
FACTS_MARK = "\nFacts as of "  # a SKU sheet's heading ends here; its fact lines follow
_SKIP_IN_TEXT = {"description", "as of", "store", "item", "category", "department", "state"}
_ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly"}
_META_FIELDS = {"store": "store", "item": "item", "category": "category", "department": "dept"}


def fact_lines(facts: Iterable[Mapping[str, Any]], skip: set[str] | None = None) -> str:
    """One line per fact, "- name: value unit", skipping empty values and names in `skip`."""
    lines = []
    for f in facts:
        if f["value"] is None or f["name"] in (skip or set()):
            continue
        lines.append("- " + format_fact(Fact(f["name"], f["value"], f["unit"])))
    return "\n".join(lines)


def _as_of_text(book: FactBook) -> str:
    return format_fact(Fact("as of", book.as_of, "date")).split(": ", 1)[1]


def sku_document(book: FactBook, sku: str) -> KBDocument:
    """The fact sheet of one SKU."""
    desc = book.description(sku)
    attrs = book.attributes(sku)
    head = f"SKU {sku}" + (f": {desc}" if desc else "")
    where = ", ".join(f"{k} {v}" for k, v in attrs.items() if k != "item")
    if where:
        head += f" ({where})"
    facts = book.sku_facts(sku)
    cadence = _ADJECTIVE.get(book.period, "periodic")
    text = f"{head}.{FACTS_MARK}{_as_of_text(book)}, {cadence} data:\n{fact_lines(facts, _SKIP_IN_TEXT)}"
    meta: dict[str, Any] = {"run_id": book.run_id, "date": book.as_of, "title": desc or sku}
    for name, field in _META_FIELDS.items():
        if name in attrs:
            meta[field] = attrs[name]
    supplier = next((f["value"] for f in facts if f["name"] == "supplier"), None)
    if supplier:
        meta["supplier"] = supplier
    return make_document("sku", sku, text, **meta)


def embedding_text(doc: KBDocument) -> str:
    """The text whose embedding stands for `doc` in the dense index: a SKU sheet's heading (code, name,
    store, category), since its fact lines read alike for every SKU and would only make each embedding
    cost the model's full 256 tokens; the whole text of every other document. BM25 and the code match
    still see the full text."""
    if doc.kind == "sku":
        return doc.text.split(FACTS_MARK, 1)[0]
    return doc.text


def group_document(book: FactBook, attribute: str, value: str) -> KBDocument:
    """Summary of one category or store."""
    facts = book.group_facts(attribute, value)
    text = (
        f"{attribute.capitalize()} {value}: summary over its SKUs as of {_as_of_text(book)}.\n"
        f"{fact_lines(facts, {'as of'})}"
    )
    return make_document(
        attribute, value, text, run_id=book.run_id, date=book.as_of, title=f"{attribute} {value}"
    )


def supplier_document(book: FactBook, name: str) -> KBDocument:
    """Lead-time sheet of one supplier."""
    facts = book.supplier_facts(name)
    text = f"Supplier {name}: lead times from the purchase-order history.\n{fact_lines(facts, {'supplier'})}"
    return make_document(
        "supplier", name, text, run_id=book.run_id, date=book.as_of, title=f"supplier {name}"
    )


def report_documents(reports: pd.DataFrame, run_id: str | None = None) -> list[KBDocument]:
    """Weekly reports (rows with as_of, summary, markdown_path) as `report:weekly:<date>` documents."""
    docs = []
    for row in reports.to_dict(orient="records"):
        day = pd.Timestamp(row["as_of"]).date().isoformat()
        parts = [f"Weekly report for {day}."]
        if row.get("summary"):
            parts.append(str(row["summary"]).strip())
        path = Path(str(row.get("markdown_path") or ""))
        if row.get("markdown_path") and path.is_file():
            parts.append(path.read_text(encoding="utf-8", errors="replace")[:REPORT_CHARS].strip())
        meta = {"run_id": row.get("run_id") or run_id, "date": day, "title": f"weekly report {day}"}
        if row.get("markdown_path"):
            meta["path"] = str(row["markdown_path"])
        docs.append(make_document("report", f"weekly:{day}", "\n\n".join(parts), **meta))
    return docs


def build_documents(book: FactBook, policy_dir: str | Path | None = None) -> list[KBDocument]:
    """Every knowledge-base document of a run: SKU sheets, category/store summaries, suppliers, weekly
    reports and the policy handbook."""
    docs = [sku_document(book, sku) for sku in book.skus]
    docs += [group_document(book, "category", c) for c in book.categories()]
    docs += [group_document(book, "store", s) for s in book.stores()]
    docs += [supplier_document(book, s) for s in book.suppliers()]
    reports = book.weekly_reports()
    if len(reports):
        docs += report_documents(reports, book.run_id)
    docs += load_policies(policy_dir)
    return docs
