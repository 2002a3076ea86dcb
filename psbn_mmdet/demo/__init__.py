"""The demo: its data set (:mod:`.data`), the comparison of BN and psBN finetunes (:mod:`.compare`), their command lines (:mod:`.cli`)."""
