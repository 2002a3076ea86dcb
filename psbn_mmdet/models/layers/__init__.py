"""psBN and psSyncBN: BatchNorm that can post-shift dead channels back."""
