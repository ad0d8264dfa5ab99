"""Few-shot classification on a backbone's features: episodes (:mod:`.episodes`) and the classifiers that
learn from a support set of K images per class (:mod:`.methods`)."""
