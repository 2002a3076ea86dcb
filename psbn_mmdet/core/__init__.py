"""Plain PyTorch, no mmengine: where BNs sit, collapse criteria, window statistics, the post-shift controller."""
