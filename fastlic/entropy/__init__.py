"""Entropy coding: integer tables built once per model, grouped vectorised ANS coding."""
from .coder import SymbolCoder
from .tables import PMF_TOTAL, EntropyTables, TableSet, build_tables

__all__ = ["SymbolCoder", "EntropyTables", "TableSet", "build_tables", "PMF_TOTAL"]
