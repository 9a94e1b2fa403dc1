"""Corpora: tokenised character streams cut into train | val | probe_train | probe_test blocks."""
