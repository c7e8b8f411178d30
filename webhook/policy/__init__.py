"""ImagePolicy: the model, loading it, one module per rule, and evaluation."""
