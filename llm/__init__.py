"""StockPilot's language-model layer: offline model loading, prompts, generation and the number guard.

- `llm.config`: `LLMSettings` (`STOCKPILOT_LLM`, `STOCKPILOT_LLM_ADAPTER`, ...), `parse_backend`.
- `llm.model`: the bundled SmolLM2 (GGUF -> cached checkpoint), local folders, LoRA adapters.
- `llm.generate`: `Writer` (`LocalWriter`, `ChatModelWriter`), `load_writer`, `get_writer`.
- `llm.numbers`: `extract_numbers`; `llm.facts`: `Fact`, `facts_sentence`.
- `llm.guard`: `check_numbers`, `guarded_generate`; `llm.prompts`: `SYSTEM_PROMPT`, `build_messages`.

Nothing heavy is imported here: torch and transformers load only when a model is.
"""
