"""The hybrid index as a LangChain retriever (langchain-core 1.x `BaseRetriever`).

    retriever = KnowledgeRetriever(index=HybridIndex.load(), k=4, filters={"type": ["policy", "sku"]})
    docs = retriever.invoke("what is the reorder point of 85123A?")
    docs[0].id, docs[0].metadata["doc_id"], docs[0].metadata["score"]

Each returned `Document` has `id` set to the stable document id (for citations) and carries, besides the
document's own metadata, `doc_id`, `score` (the fused RRF score) and its parts: `dense_score`,
`lexical_score`, `dense_rank`, `lexical_rank`, `code_rank`, `matched_codes`.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from rag.index import HybridIndex


class KnowledgeRetriever(BaseRetriever):
    """Retrieve knowledge-base documents by hybrid (dense + BM25 + code) search.

    `k`, `filters` and `mode` are defaults; `invoke(query, k=..., filters=..., mode=...)` overrides them for
    one call. `min_score` drops hits whose fused score is lower.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: HybridIndex
    k: int = 4
    filters: dict[str, Any] | None = None
    mode: str = "hybrid"
    min_score: float = 0.0
    tags: list[str] | None = Field(default_factory=lambda: ["stockpilot-kb"])

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filters: dict[str, Any] | None = None,
        mode: str | None = None,
    ) -> list[Document]:
        hits = self.index.search(
            query,
            k=k if k is not None else self.k,
            filters=filters if filters is not None else self.filters,
            mode=mode or self.mode,
        )
        return [hit.doc.to_langchain(**hit.parts()) for hit in hits if hit.score >= self.min_score]

    def _get_ls_params(self, **kwargs: Any) -> Any:
        params = super()._get_ls_params(**kwargs)
        params["ls_embedding_model"] = self.index.model_name
        params["ls_vector_store_provider"] = "faiss"
        return params
