"""The labeled dataset out: a project's final per-frame masks, with provenance, in four formats."""
