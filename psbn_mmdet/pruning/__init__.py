"""Removing dead channels exactly: the plan, the surgery, costs, verification."""
