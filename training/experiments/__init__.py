"""Paper experiments: permutation invariance (§3.4) and token-mixing weight pictures (Fig. 5)."""
