"""The chat app's screens besides the main one."""
