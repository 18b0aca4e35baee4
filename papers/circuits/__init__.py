"""Circuit discovery worked cases: indirect-object identification on SmolLM2-135M (:mod:`.ioi`)."""
