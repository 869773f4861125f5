"""The rules that decide whether a request may run: quotas and pace (quota.py), access rules (access.py)."""
