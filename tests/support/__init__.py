"""What the tests share: the helpers, views and platform drivers that several test modules use. A test module
imports from here (or gets a fixture from a conftest.py), never from another test module."""
