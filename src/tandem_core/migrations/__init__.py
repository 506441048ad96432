"""Versioned SQL migrations of the ledger schema (applied by tandem_core.schema)."""
