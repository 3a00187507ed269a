"""Shared fixtures. Test modules of one area keep their own fixtures beside them."""
