"""Pure functions from logits to tokens: processing, sparse draft distributions, verification."""
