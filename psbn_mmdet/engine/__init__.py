"""mmengine glue: hooks for ``custom_hooks``, distributed training on CPUs."""
