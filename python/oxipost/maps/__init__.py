"""Lookup tables (Postfix dict_*): type:name dispatch and the key search orders."""
