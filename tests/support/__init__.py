"""Helpers and test doubles shared by the tests (no tests here). Tests import ``support.<module>``;
no test imports another test module."""
