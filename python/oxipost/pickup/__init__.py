"""pickup(8): feeds maildrop/ to cleanup."""
