"""The administrator's commands, with Postfix's names, flags, output and exit codes."""
