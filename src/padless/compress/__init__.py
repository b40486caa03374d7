"""Making models smaller: structured and unstructured pruning, and knowledge distillation (see each module)."""
