"""mmengine glue: hooks for ``custom_hooks`` (:mod:`.hooks`) and distributed training on CPUs (:mod:`.dist`)."""
