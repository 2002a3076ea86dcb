"""The demo: its data set, and the comparison of BN and psBN finetunes."""
