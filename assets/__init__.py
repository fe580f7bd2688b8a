"""Shipped data: device profiles and icons."""
